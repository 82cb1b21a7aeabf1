// The few parts of s3rver (a dev dependency without type declarations) the tests use.
declare module "s3rver" {
  export default class S3rver {
    constructor(o: { port?: number; address?: string; silent?: boolean; directory: string; configureBuckets?: { name: string }[] });
    run(): Promise<{ address: string; port: number }>;
    close(): Promise<void>;
  }
}
