from prge.data.examples import Example, Task  # noqa: F401
from prge.data.kinds import CLASSIFICATION, GENERATION, KINDS, MULTIPLE_CHOICE, TaskKind  # noqa: F401
from prge.data.tasks import TASKS, get_task, task_for  # noqa: F401
from prge.data.batching import PromptEncoder  # noqa: F401
