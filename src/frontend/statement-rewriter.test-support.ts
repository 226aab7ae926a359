// Test support shared by the rewriter's unit tests (not shipped: tsconfig.build.json leaves
// *.test-support.ts out): frontend messages rendered as short tokens for readable assertions.

export function cstr(b: Buffer, off: number): [string, number] {
  const end = b.indexOf(0, off);
  return [b.toString("utf8", off, end), end + 1];
}

/** Frontend → backend messages as short tokens. */
export function frontendTokens(bytes: Buffer): string[] {
  const out: string[] = [];
  for (let off = 0; off < bytes.length; ) {
    const type = String.fromCharCode(bytes[off]!);
    const len = bytes.readInt32BE(off + 1);
    const body = bytes.subarray(off + 5, off + 1 + len);
    off += 1 + len;
    switch (type) {
      case "P": {
        const [name, o] = cstr(body, 0);
        const [sql, o2] = cstr(body, o);
        const n = body.readInt16BE(o2);
        const types = Array.from({ length: n }, (_, i) => body.readUInt32BE(o2 + 2 + 4 * i));
        out.push(`P ${name} ${sql}${n > 0 ? ` [${types.join(",")}]` : ""}`);
        break;
      }
      case "B": {
        const [portal, o] = cstr(body, 0);
        const [stmt] = cstr(body, o);
        out.push(`B ${portal}:${stmt}`);
        break;
      }
      case "D":
      case "C": {
        if (body[0] === 0) out.push(`${type} forced-error`);
        else out.push(`${type} ${String.fromCharCode(body[0]!)} ${cstr(body, 1)[0]}`);
        break;
      }
      case "E":
        out.push(`E ${cstr(body, 0)[0]}`);
        break;
      case "Q":
        out.push(`Q ${cstr(body, 0)[0]}`);
        break;
      default:
        out.push(type);
    }
  }
  return out;
}
