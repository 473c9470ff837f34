"""The Prefect cache policy of every stage: the key of tasks/core/caching.py, with verified hits.

Prefect's built-in INPUTS policy would hash a path as a string and TASK_SOURCE sees only the task
function itself, which is why this policy exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from prefect.cache_policies import CachePolicy

from tasks.core.caching import digest_key, expire_if_damaged, key_payload


@dataclass
class StageCache(CachePolicy):
    """Keyed on content (tasks/core/caching.py); a hit whose files changed is expired first."""

    packages: tuple[str, ...] = field(default_factory=tuple)
    # Inputs that cannot change the output (where it is written, how a file is fetched).
    ignore: tuple[str, ...] = ("work_dir",)

    def payload(self, task, inputs: dict[str, Any]) -> dict:
        keyed = {k: v for k, v in inputs.items() if k not in self.ignore}
        return key_payload(task.name, task.fn.__module__, keyed, self.packages)

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        key = digest_key(self.payload(task_ctx.task, inputs))
        expire_if_damaged(task_ctx, key, inputs.get("work_dir"))
        return key
