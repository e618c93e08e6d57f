"""The `sandbox` section: limits of one sandboxed program and how many run at once. The limits'
defaults are SandboxLimits' own (executor.py), so they live once."""

from __future__ import annotations

from dataclasses import dataclass

from megatron_recipes.sandbox.executor import SandboxLimits
from stack_common.checks import require_at_least


@dataclass
class SandboxConfig:
    """Limits of one sandboxed program (megatron_recipes.sandbox) and concurrent programs."""

    wall_seconds: float = SandboxLimits.wall_seconds
    cpu_seconds: int = SandboxLimits.cpu_seconds
    memory_mb: int = SandboxLimits.memory_mb
    processes: int = SandboxLimits.processes
    file_size_mb: int = SandboxLimits.file_size_mb
    output_bytes: int = SandboxLimits.output_bytes
    disk_mb: int = SandboxLimits.disk_mb
    use_cgroup: bool = SandboxLimits.use_cgroup
    max_workers: int = 2

    def validate(self) -> None:
        self.limits().validate()
        require_at_least("sandbox.max_workers", self.max_workers, 1)

    def limits(self) -> SandboxLimits:
        return SandboxLimits(
            self.wall_seconds,
            self.cpu_seconds,
            self.memory_mb,
            self.processes,
            self.file_size_mb,
            self.output_bytes,
            disk_mb=self.disk_mb,
            use_cgroup=self.use_cgroup,
        )
