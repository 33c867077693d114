import sys
n = int(sys.argv[1])
parts = ["---", 'maml_version: "1.0"', 'permissions: {execute: true}', "---", "# chain", "", "## Code_Blocks", ""]
for i in range(n - 1):
    parts += [f"```python {{id=s{i}}}", f"result = {i}", "```", ""]
parts += ["```python {id=last}", "import psutil, os", "result = psutil.Process().memory_info().rss", "```", ""]
open(f"chain{n}.maml.md", "w").write("\n".join(parts))
