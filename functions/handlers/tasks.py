"""The state machine's task functions: one Lambda handler per task, all the same shape.

Each handler is ``template.yaml``'s ``Handler: handlers.tasks.<task>`` for ``<Task>Function``, calls
``RotationTasks.<task>`` and is replayed by ``events/tasks/<task>.json``.
"""

from __future__ import annotations

from handlers.common import task_handler
from rotator_core.models import RollbackInput

resolve_endpoints = task_handler("resolve_endpoints")
check_current = task_handler("check_current")
set_password = task_handler("set_password")
await_replica = task_handler("await_replica")
test_endpoint = task_handler("test_endpoint")
promote = task_handler("promote")
rollback = task_handler("rollback", RollbackInput)
