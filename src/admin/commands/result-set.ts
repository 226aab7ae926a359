// Builds a SHOW result (RowDescription, one DataRow per row, CommandComplete "SHOW") from typed
// columns. Each column keeps its name, type and value together, so a column cannot drift out of
// line with its value when columns are added. Types follow PgBouncer's (src/pktbuf.c): text for
// strings and times, int4 for counts and flags, numeric for the SHOW STATS totals; all values go
// out in text format.

import { commandComplete, dataRow, rowDescription } from "../../protocol/index.js";

export type ColumnType = "text" | "int4" | "int8" | "numeric";

const TYPE_OID: Readonly<Record<ColumnType, number>> = {
  text: 25,
  int4: 23,
  int8: 20,
  numeric: 1700,
};

export type Cell = string | number | null;

export interface Column<R> {
  readonly name: string;
  readonly type: ColumnType;
  readonly value: (row: R) => Cell;
}

export function text<R>(name: string, value: (row: R) => string | null): Column<R> {
  return { name, type: "text", value };
}

export function int4<R>(name: string, value: (row: R) => number | null): Column<R> {
  return { name, type: "int4", value };
}

export function int8<R>(name: string, value: (row: R) => number | null): Column<R> {
  return { name, type: "int8", value };
}

export function numeric<R>(name: string, value: (row: R) => number): Column<R> {
  return { name, type: "numeric", value };
}

export function resultSet<R>(columns: readonly Column<R>[], rows: Iterable<R>): Buffer[] {
  const out: Buffer[] = [
    rowDescription(columns.map((c) => ({ name: c.name, typeOid: TYPE_OID[c.type] }))),
  ];
  for (const row of rows) out.push(dataRow(columns.map((c) => cellText(c.type, c.value(row)))));
  out.push(commandComplete("SHOW"));
  return out;
}

function cellText(type: ColumnType, v: Cell): string | null {
  if (v === null) return null;
  if (typeof v === "string") return v;
  // NaN or Infinity would not parse as any of our column types on the client.
  if (!Number.isFinite(v)) return null;
  const integral = type === "int4" || type === "int8";
  return integral && !Number.isInteger(v) ? String(Math.trunc(v)) : String(v);
}

/** Wall-clock epoch ms as ISO 8601 text (UTC), or null when there is no time. */
export function isoTime(ms: number | null): string | null {
  return ms === null || !Number.isFinite(ms) ? null : new Date(ms).toISOString();
}
