from prge.data.tasks import Example, Task, get_task, TASKS  # noqa: F401
from prge.data.batching import PromptEncoder  # noqa: F401
