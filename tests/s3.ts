// A private S3-compatible server for the tests: s3rver (pure JavaScript, a dev dependency installed by
// `npm ci`, so it is always there: no skip) on 127.0.0.1 on a port the kernel picks, a bucket in a temp dir.
// Bun's S3 client talks to it with SigV4 and path-style URLs, as to any S3-compatible store; s3rver checks
// the signature with its fixed key pair S3RVER / S3RVER.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import S3rver from "s3rver";

export interface S3Server {
  bucket: string;
  endpoint: string;
  /** The variables a process needs to reach it (Bun's S3 client reads them). */
  env: Record<string, string>;
  stop(): Promise<void>;
}

export async function startS3(bucket = "siri"): Promise<S3Server> {
  const dir = mkdtempSync(join(tmpdir(), "siri-s3-"));
  const server = new S3rver({ port: 0, address: "127.0.0.1", silent: true, directory: dir, configureBuckets: [{ name: bucket }] });
  let port: number;
  try {
    port = (await server.run()).port;
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`the S3 test server (s3rver) would not start: ${(e as Error).message}`);
  }
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    bucket,
    endpoint,
    env: { S3_ACCESS_KEY_ID: "S3RVER", S3_SECRET_ACCESS_KEY: "S3RVER", S3_ENDPOINT: endpoint, S3_REGION: "us-east-1" },
    async stop() {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
