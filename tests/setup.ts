// Preloaded by bunfig.toml before any test file: the suite's per-test timeout,
// so a plain `bun test` behaves like `npm test`. Bun 1.4.5 ignores `timeout`
// under [test] in bunfig.toml (checked: a 6 s test still timed out at 5 s), and
// setDefaultTimeout() covers only the file it runs in, so this plugin puts
// that one call in front of every test file's first line (line numbers in
// failures stay the same). A test can still pass its own timeout.
import { plugin } from "bun";

export const TEST_TIMEOUT_MS = 300_000; // GPU tests on a software adapter on a busy 2-core machine

plugin({
  name: "suite-default-timeout",
  setup(build) {
    build.onLoad({ filter: /\.test\.ts$/ }, async ({ path }) => {
      const src = await Bun.file(path).text();
      const head = `import { setDefaultTimeout as __siriSetTimeout } from "bun:test"; __siriSetTimeout(${TEST_TIMEOUT_MS}); `;
      return { loader: "ts", contents: head + src };
    });
  },
});
