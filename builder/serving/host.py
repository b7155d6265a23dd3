"""What host this is, as far as numerics go: the fingerprint machine-dependent build steps put in
their keys, and what serve.py --selftest compares with the build host's. Standard library only (it
ships in every artifact)."""

import functools
import os
import platform

# CPU features that change what a runtime computes, not just how fast: bf16 and fp16 arithmetic
# (OpenVINO computes in them where they exist), int8 dot products and AMX tiles (int8 kernels), and
# the vector width (the summation order of float kernels). Two hosts that a hypervisor names alike
# ("AMD EPYC") can differ in exactly these.
NUMERIC_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx_vnni_int8", "avx_ne_convert", "avx512_bf16",
                     "avx512_fp16", "amx_bf16", "amx_int8", "amx_fp16", "asimdhp", "bf16", "i8mm")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict:
    """The fields of /proc/cpuinfo, the first processor's where they repeat ({} where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or "unknown"


def numeric_cpu_flags() -> list:
    """Which of NUMERIC_CPU_FLAGS this CPU has (x86 'flags', Arm 'Features')."""
    info = _cpuinfo()
    present = set((info.get("flags") or info.get("Features") or "").split())
    return [flag for flag in NUMERIC_CPU_FLAGS if flag in present]


def describe_cpu() -> str:
    """One line for logs and reports: the model and the flags that change numerics."""
    flags = " ".join(numeric_cpu_flags()) or "none of " + " ".join(NUMERIC_CPU_FLAGS)
    return f"{cpu_model()}, {os.cpu_count()} CPUs, numeric flags: {flags}"


@functools.lru_cache(maxsize=1)
def host_fingerprint() -> dict:
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu": cpu_model(),
        "cpu_flags": numeric_cpu_flags(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def same_numerics(recorded: dict) -> bool:
    """Whether a recorded host fingerprint names a CPU that computes as this one does."""
    here = host_fingerprint()
    return all(recorded.get(key) == here[key] for key in ("machine", "cpu", "cpu_flags"))
