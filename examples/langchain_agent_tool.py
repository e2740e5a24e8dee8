"""blockgen's document writer as a LangChain tool: the schema an agent's tool-calling model is given, and the call
it makes (here made directly, as an agent executor would after the model chose the tool).

Usage: python examples/langchain_agent_tool.py [out_root] [words] [model]
"""

import json
import sys
import tempfile

from langchain_core.utils.function_calling import convert_to_openai_tool

from blockgen.integrations.langchain import document_writer


def main() -> None:
    out_root = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="blockgen-agent-")
    words = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    model = sys.argv[3] if len(sys.argv) > 3 else "default"
    tool = document_writer(model, out_root=out_root, output="summary").as_tool(
        name="write_long_document",
        description="Plan and write a long report or story of a given length; returns where the files are.",
    )
    print("tool schema for the agent:")
    print(json.dumps(convert_to_openai_tool(tool), indent=1))
    call = {"topic": "how lighthouses guided ships before radio", "kind": "report", "words": words}
    print(f"\nthe agent calls write_long_document({call})")
    print(tool.invoke(call))


if __name__ == "__main__":
    main()
