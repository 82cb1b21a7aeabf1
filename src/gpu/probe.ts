// Exit 0 and print the adapter's description when a WebGPU adapter exists;
// exit 1 otherwise. Used by scripts/setup.sh.
import { Gpu } from "./index.ts";
try {
  const gpu = await Gpu.open();
  console.log(`${gpu.adapter.description} (${gpu.adapter.backend})`);
  gpu.destroy();
  process.exit(0);
} catch (e) {
  console.error((e as Error).message);
  process.exit(1);
}
