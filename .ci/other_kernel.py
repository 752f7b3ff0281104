"""Print an OpenBLAS kernel (OPENBLAS_CORETYPE) this CPU runs that is not the one in use.

The numerics tests run a second time under it (.ci/run): kernels round float sums in other
orders, so a tolerance tuned to one machine's rounding fails here first. Prints nothing
where there is no other kernel to choose (not x86-64, or not OpenBLAS).
"""

from pathlib import Path

import numpy  # noqa: F401  (loads OpenBLAS, so threadpoolctl sees it)
from threadpoolctl import threadpool_info

# x86-64 kernels of a DYNAMIC_ARCH OpenBLAS and the CPU flag each needs.
CANDIDATES = (("Haswell", "avx2"), ("Sandybridge", "avx"), ("Nehalem", "sse4_2"))


def main():
    blas = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
    cpuinfo = Path("/proc/cpuinfo")
    if not blas or not cpuinfo.exists():
        return
    current = (blas[0].get("architecture") or "").lower()
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    for kernel, flag in CANDIDATES:
        if flag in flags and kernel.lower() != current:
            print(kernel)
            return


main()
