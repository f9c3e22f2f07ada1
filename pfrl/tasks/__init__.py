"""Tasks: a data reader, prompt formats and answer/program extraction, per task family.

The problem schema (JSONL, one object per line) is shared by every part of pfrl:

    {"id": str, "prompt": str,                       # prompt is fed to the model verbatim
     "answer": str?,  "reference": str?,             # math: a bare answer or a full solution
     "entry_point": str?, "test_inputs": [str]?, "test_outputs": [str]?}   # code

`entry_point` set means function-call tests (each input a JSON array of positional arguments, each
output the JSON of the return value); unset means stdin/stdout programs. A real data set converted to
this schema loads exactly like the synthetic ones.
"""

from pfrl.tasks.io import ProblemFile, read_problems, write_jsonl

__all__ = ["ProblemFile", "read_problems", "write_jsonl"]
