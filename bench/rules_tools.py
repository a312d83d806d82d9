#!/usr/bin/env python3
"""Fixtures and answer checks for bench/rules.sh (standard library only).

    rules_tools.py fixtures DIR      writes DIR/list-json, DIR/list-sse (the upstream's
                                     200-tool tools/list answers, JSON-RPC id 1),
                                     DIR/expected-visible.txt (the names the bench caller may
                                     see through the route with rules) and DIR/all.txt
    rules_tools.py check-json FILE NAMES   FILE is a JSON answer: its tools must be exactly
                                           the names in NAMES, in order; prints the count
    rules_tools.py check-sse FILE NAMES    FILE is an event-stream answer: a notification
                                           event, unchanged, then the response event whose
                                           tools must be exactly NAMES; prints the count

The tool mix is fixed (no randomness): 200 tools in an interleaved order, every one with a
description and a small input schema (~250 bytes each, like a real server's list). Which of
them the bench caller may see follows the rules in bench/rules.sh (kept in step by hand):

    rule 1  no-deletes          tools delete_*          deny                 -> hidden
    rule 2  deploy-needs-admin  tools deploy            scopes [admin]       -> listed (step-up)
    rule 3  ops-group           tools ops_*             groups [ops]         -> hidden (no group)
    rule 4  search-needs-scope  tools search_*          scopes [mcp:search]  -> listed (step-up)
    rule 5  reads               tools get_*, list_*     allow                -> listed
    default deny                everything else (internal_*)                 -> hidden
"""

import json
import sys
from pathlib import Path

GROUPS = [  # (prefix, count, visible to the bench caller)
    ("get_", 60, True),
    ("list_", 30, True),
    ("search_", 20, True),
    ("delete_", 30, False),
    ("ops_", 20, False),
    ("internal_", 39, False),
]
NOTIFICATION = {
    "jsonrpc": "2.0",
    "method": "notifications/message",
    "params": {"level": "info", "logger": "bench", "data": "listing tools"},
}


def tools():
    """[(name, visible)]: the groups interleaved round-robin, `deploy` in the middle."""
    queues = [[(f"{p}item_{i:03d}", v) for i in range(n)] for p, n, v in GROUPS]
    out = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    out.insert(len(out) // 2, ("deploy", True))
    assert len(out) == 200, len(out)
    return out


def tool_object(name, index):
    return {
        "name": name,
        "title": name.replace("_", " ").title(),
        "description": f"Bench tool {index + 1} of 200: does what its name says to one item of the bench catalogue.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "description": "Identifier of the item."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            },
            "required": ["id"],
        },
    }


def fixtures(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    listed = tools()
    response = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"tools": [tool_object(n, i) for i, (n, _) in enumerate(listed)]},
    }
    body = json.dumps(response, separators=(",", ":"))
    (directory / "list-json").write_text(body)
    sse = (
        "event: message\n"
        f"data: {json.dumps(NOTIFICATION, separators=(',', ':'))}\n\n"
        "event: message\n"
        f"data: {body}\n\n"
    )
    (directory / "list-sse").write_text(sse)
    (directory / "all.txt").write_text("".join(n + "\n" for n, _ in listed))
    (directory / "expected-visible.txt").write_text("".join(n + "\n" for n, v in listed if v))


def names_of(message):
    if message.get("jsonrpc") != "2.0" or message.get("id") != 1:
        sys.exit(f"not the JSON-RPC response with id 1: {str(message)[:200]}")
    return [t["name"] for t in message["result"]["tools"]]


def compare(got, names_file):
    want = Path(names_file).read_text().split()
    if got != want:
        sys.exit(f"tools differ: got {len(got)}, expected {len(want)}; "
                 f"unexpected {sorted(set(got) - set(want))[:5]}, missing {sorted(set(want) - set(got))[:5]}")
    print(len(got))


def check_json(path, names_file):
    compare(names_of(json.loads(Path(path).read_bytes())), names_file)


def check_sse(path, names_file):
    text = Path(path).read_text()
    events = [e for e in text.replace("\r\n", "\n").split("\n\n") if e.strip()]
    if len(events) != 2:
        sys.exit(f"expected 2 events, got {len(events)}")
    first = json.loads("\n".join(l[5:].lstrip(" ") for l in events[0].split("\n") if l.startswith("data:")))
    if first != NOTIFICATION:
        sys.exit(f"the notification event changed: {events[0][:200]}")
    data = "\n".join(l[5:].removeprefix(" ") for l in events[1].split("\n") if l.startswith("data:"))
    compare(names_of(json.loads(data)), names_file)


def main(argv):
    if len(argv) == 3 and argv[1] == "fixtures":
        fixtures(Path(argv[2]))
    elif len(argv) == 4 and argv[1] == "check-json":
        check_json(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "check-sse":
        check_sse(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
