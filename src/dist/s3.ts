/**
 * Rollout weights in an S3-compatible bucket, for learners and workers on
 * machines with no shared filesystem (used by src/dist/weights.ts only).
 * Bun's built-in S3 client: nothing to install, SigV4 signing, any
 * S3-compatible endpoint (AWS, MinIO, R2, Ceph...). Credentials, endpoint and
 * region come from the environment variables Bun documents: S3_ACCESS_KEY_ID,
 * S3_SECRET_ACCESS_KEY, S3_ENDPOINT, S3_REGION, S3_SESSION_TOKEN (or their
 * AWS_* names); the bucket and prefix from the URL s3://BUCKET/PREFIX.
 */
import { S3Client } from "bun";

export interface S3Place {
  /** s3://BUCKET or s3://BUCKET/PREFIX (no trailing slash). */
  url: string;
  bucket: string;
  /** Key prefix without a trailing slash ("" for the bucket's root). */
  prefix: string;
}

export const isS3Url = (s: string): boolean => s.startsWith("s3://");

export function parseS3Url(url: string): S3Place {
  const m = /^s3:\/\/([^/]+)\/*(.*)$/.exec(url);
  if (!m) throw new Error(`${url}: expected s3://BUCKET/PREFIX`);
  const prefix = m[2].replace(/\/+$/, "");
  return { url: `s3://${m[1]}${prefix ? `/${prefix}` : ""}`, bucket: m[1], prefix };
}

/** `name` under `p`: its key and its URL. */
export function s3Child(p: S3Place, name: string): S3Place {
  const prefix = p.prefix ? `${p.prefix}/${name}` : name;
  return { url: `${p.url}/${name}`, bucket: p.bucket, prefix };
}

const env = (a: string, b: string): string | undefined => process.env[a] || process.env[b];
const CREDENTIALS: [string, string][] = [
  ["S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"],
  ["S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"],
];
const ENDPOINT_HINT = "S3_ENDPOINT (or AWS_ENDPOINT; unset: AWS itself)";

/** A client for `p`'s bucket from the environment; missing credentials are named here, before any request. */
export function s3Client(p: S3Place): S3Client {
  const missing = CREDENTIALS.filter(([a, b]) => !env(a, b)).map(([a, b]) => `${a} (or ${b})`);
  if (missing.length) throw new Error(`${p.url}: no S3 credentials: set ${missing.join(" and ")}, and ${ENDPOINT_HINT}, S3_REGION (or AWS_REGION) where the store needs one`);
  // Read here, not left to the client: Bun reads its defaults once, at start-up.
  const opt = (k: string, a: string, b: string) => (env(a, b) ? { [k]: env(a, b) } : {});
  return new S3Client({
    bucket: p.bucket,
    accessKeyId: env("S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
    secretAccessKey: env("S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ...opt("sessionToken", "S3_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
    ...opt("endpoint", "S3_ENDPOINT", "AWS_ENDPOINT"),
    ...opt("region", "S3_REGION", "AWS_REGION"),
  });
}

/** Run one S3 call; a failure names what was done, the object's URL, and the setting to check. */
export async function s3Call<T>(what: string, url: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    const code = (e as { code?: string }).code ?? "";
    const msg = (e as Error).message;
    let hint = "";
    if (code === "NoSuchKey") hint = "no such object";
    else if (code === "NoSuchBucket") hint = "no such bucket (create it first)";
    else if (["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"].includes(code)) hint = `check S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY (or AWS_*), and S3_SESSION_TOKEN where the keys are temporary`;
    else if (/ECONNREFUSED|ConnectionRefused|ENOTFOUND|FailedToOpenSocket|ConnectionClosed/i.test(`${code} ${msg}`)) hint = `cannot reach the store: check ${ENDPOINT_HINT}, now ${env("S3_ENDPOINT", "AWS_ENDPOINT") ?? "unset"}`;
    throw new Error(`${what} ${url}: ${code ? `${code}: ` : ""}${msg}${hint ? ` (${hint})` : ""}`);
  }
}

/** The "folders" directly under `p` (their names), all pages. */
export async function s3Folders(c: S3Client, p: S3Place): Promise<string[]> {
  const prefix = p.prefix ? `${p.prefix}/` : "";
  const out: string[] = [];
  let token: string | undefined;
  do {
    const r = await s3Call("listing", p.url, () => c.list({ prefix, delimiter: "/", ...(token ? { continuationToken: token } : {}) }));
    for (const f of r.commonPrefixes ?? []) out.push(f.prefix.slice(prefix.length).replace(/\/$/, ""));
    token = r.isTruncated ? r.nextContinuationToken : undefined;
  } while (token);
  return out;
}

/** Every object under `p` (whole keys), all pages. */
export async function s3Keys(c: S3Client, p: S3Place): Promise<string[]> {
  const out: string[] = [];
  let token: string | undefined;
  do {
    const r = await s3Call("listing", p.url, () => c.list({ prefix: `${p.prefix}/`, ...(token ? { continuationToken: token } : {}) }));
    for (const o of r.contents ?? []) out.push(o.key);
    token = r.isTruncated ? r.nextContinuationToken : undefined;
  } while (token);
  return out;
}
