// How an instance's pool sizes are shared among its worker processes (design §6). Each worker
// has its own pools, so `pool_size` (and `min_pool_size`) of every user is split: worker i of N
// gets floor(size / N), plus one for the first (size mod N) workers, so the shares add up to the
// configured size exactly. A pool needs at least one server connection to serve anyone, so a
// share of 0 becomes 1: when pool_size < N the instance may open up to N server connections for
// that pool (one per worker), more than pool_size. `min_pool_size` is split the same way but may
// be 0 in a worker. `max_client_connections` is not split: it bounds each worker, as PgBouncer's
// max_client_conn bounds each of its so_reuseport processes.

import type { Config } from "../config/index.js";

/** Worker `index`'s share (0-based) of `total` among `workers`; never below `floor`. */
export function share(total: number, index: number, workers: number, floor = 0): number {
  const base = Math.floor(total / workers) + (index < total % workers ? 1 : 0);
  return Math.max(floor, base);
}

/** `config` as worker `index` of `workers` runs it: every user's pool sizes are its share. */
export function workerConfig(config: Config, index: number, workers: number): Config {
  if (workers <= 1) return config;
  return Object.freeze({
    ...config,
    users: Object.freeze(
      config.users.map((u) => {
        const poolSize = share(u.pool_size, index, workers, 1);
        return Object.freeze({
          ...u,
          pool_size: poolSize,
          min_pool_size: Math.min(poolSize, share(u.min_pool_size, index, workers)),
        });
      }),
    ),
  });
}
