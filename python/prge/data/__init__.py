from prge.data.tasks import Example, Task, get_task, task_for, TASKS  # noqa: F401
from prge.data.batching import PromptEncoder  # noqa: F401
