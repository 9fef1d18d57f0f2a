//! The DPoP replay store: a Durable Object remembering which DPoP proofs
//! were already used (RFC 9449 §11.1: a proof's `jti` is accepted once
//! within the time the proof is acceptable).
//!
//! What it guarantees: a key is claimed once, worldwide, until it expires
//! (held through its expiry second itself: free only once `now > expires`,
//! so a proof the gate still accepts at the edge of its window is caught).
//! The gate (src/entry.mjs) sends every key to the object named by its first
//! two hex digits (256 objects), so a key always lands in the same object,
//! wherever the request came in; Cloudflare runs each object in exactly one
//! place at a time, and this object answers `true` for a key once.
//!
//! What it keeps: keys (hashes the gate computed, 64 hex digits) and their
//! expiry (unix seconds), nothing else: no token, no proof, no secret. A key
//! is dropped once expired; the gate sets the expiry at the end of the time
//! it would accept the proof anyway, so forgetting it then loses nothing.

import { DurableObject } from 'cloudflare:workers';

/** A key: SHA-256 as lowercase hex. */
const KEY = /^[0-9a-f]{64}$/;
/** How far from now an expiry may be (seconds): the gate's windows are minutes. */
const MAX_EXPIRY_DISTANCE_SECONDS = 24 * 60 * 60;
/** Rows an alarm deletes at most; more wait for the next one. */
const PURGE_BATCH = 1000;
/** The shortest time between two purges (ms): expired rows are deleted in batches, not one alarm each. */
const PURGE_INTERVAL_MS = 60_000;

export class DpopReplay extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    // Synchronous, in the constructor: no request reaches the object before it.
    this.sql.exec(
      `CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, expires INTEGER NOT NULL) WITHOUT ROWID;
       CREATE INDEX IF NOT EXISTS claims_by_expiry ON claims (expires);`,
    );
  }

  /**
   * Claims `key` until `expiresAt` (unix seconds, inclusive): `true` when
   * it was not held (it is now), `false` when it is held and not yet
   * expired. Throws
   * on a malformed key or an expiry farther than a day from now.
   */
  async claim(key, expiresAt) {
    const now = Math.floor(Date.now() / 1000);
    if (typeof key !== 'string' || !KEY.test(key)) throw new TypeError('key: 64 lowercase hex digits expected');
    if (!Number.isSafeInteger(expiresAt) || Math.abs(expiresAt - now) > MAX_EXPIRY_DISTANCE_SECONDS) {
      throw new RangeError('expiresAt: unix seconds within a day of now expected');
    }
    // Atomic by construction, not by scheduling: the test and the write are
    // one SQLite statement (insert, or take over a row that has expired;
    // RETURNING yields a row only when this call wrote), and nothing is
    // awaited before it, so two claims of one key, however concurrent,
    // cannot both see it free. (The object being single-threaded would
    // serialize them too; this does not depend on input gates.)
    const written = this.sql
      .exec(
        `INSERT INTO claims (key, expires) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET expires = excluded.expires WHERE claims.expires < ?3
         RETURNING 1`,
        key,
        expiresAt,
        now,
      )
      .toArray().length;
    if (written === 0) return false;
    // Purging is housekeeping: a failure to schedule it must not turn a
    // first use into an error (the next claim tries again).
    // The alarm is set to when this key expires when none is set, or moved
    // earlier when the one set is much later (an outlier would otherwise
    // keep every row until it).
    try {
      const due = expiredAt(expiresAt);
      const alarm = await this.ctx.storage.getAlarm();
      if (alarm === null || alarm > due + PURGE_INTERVAL_MS) await this.ctx.storage.setAlarm(due);
    } catch {
      // Expired rows stay until a later alarm; they never block a claim.
    }
    return true;
  }

  /** Deletes expired rows, at most PURGE_BATCH, and sets the next alarm while rows remain. */
  async alarm() {
    const now = Math.floor(Date.now() / 1000);
    const deleted = this.sql
      .exec(
        `DELETE FROM claims WHERE key IN
           (SELECT key FROM claims WHERE expires < ?1 ORDER BY expires LIMIT ?2)
         RETURNING 1`,
        now,
        PURGE_BATCH,
      )
      .toArray().length;
    if (deleted >= PURGE_BATCH) {
      // A backlog: the next batch right away (other requests go first).
      await this.ctx.storage.setAlarm(Date.now());
      return;
    }
    const [next] = this.sql.exec('SELECT MIN(expires) AS expires FROM claims').toArray();
    if (next?.expires != null) {
      await this.ctx.storage.setAlarm(Math.max(expiredAt(next.expires), Date.now() + PURGE_INTERVAL_MS));
    }
  }
}

/** When a key held until `expires` (unix seconds, inclusive) is free: the next second (ms). */
function expiredAt(expires) {
  return (expires + 1) * 1000;
}
