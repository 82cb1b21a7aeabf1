/**
 * Device memory of a benchmark: every buffer created on the device and not
 * yet destroyed, counted by wrapping `device.createBuffer` (WebGPU offers no
 * memory query). Counts what this process asked for, not the driver's
 * padding or Dawn's internal scratch; the peak is the high-water mark since
 * `trackDeviceMemory` was called.
 */
import type { Gpu } from "../src/gpu/index.ts";

export interface DeviceMemory {
  liveBytes(): number;
  peakBytes(): number;
}

export function trackDeviceMemory(gpu: Gpu): DeviceMemory {
  const device = gpu.device;
  const create = device.createBuffer.bind(device);
  let live = 0;
  let peak = 0;
  device.createBuffer = (desc: GPUBufferDescriptor) => {
    const buf = create(desc);
    const size = Number(desc.size);
    live += size;
    peak = Math.max(peak, live);
    const destroy = buf.destroy.bind(buf);
    let gone = false;
    buf.destroy = () => {
      if (!gone) live -= size;
      gone = true;
      destroy();
    };
    return buf;
  };
  return { liveBytes: () => live, peakBytes: () => peak };
}
