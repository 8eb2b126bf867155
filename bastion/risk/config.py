"""``risk:`` in ``bastion.yaml``: breaker thresholds, compliance, limits and where safety state lives.

Kept in the risk package so the numbers that stop trading are defined beside the code that
enforces them; ``bastion.ops.config`` only mounts this section.

State paths default under ``~/.bastion`` rather than the working directory: two processes
started from different directories must still see the same kill switch and the same breaker.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from bastion.risk.breaker import BreakerConfig
from bastion.risk.policy import ComplianceConfig, LimitsConfig


class KillSwitchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    flag_path: str = "~/.bastion/KILL"
    audit_path: str = "~/.bastion/kill_audit.jsonl"

    def resolved_flag_path(self) -> Path:
        return Path(self.flag_path).expanduser()

    def resolved_audit_path(self) -> Path:
        return Path(self.audit_path).expanduser()


class RiskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dir: str = "~/.bastion/state"
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    compliance: ComplianceConfig = Field(default_factory=ComplianceConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    kill_switch: KillSwitchConfig = Field(default_factory=KillSwitchConfig)

    def resolved_state_dir(self) -> Path:
        return Path(self.state_dir).expanduser()
