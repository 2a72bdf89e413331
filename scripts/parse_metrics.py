#!/usr/bin/env python3
"""Parse Prometheus text exposition from stdin with the reference Python
parser (prometheus_client) and print the families as JSON:
{"<family>": {"type": "...", "samples": [{"name", "labels", "value"}]}}.
Exits 1 if the text does not parse."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    out = {}
    try:
        for family in text_string_to_metric_families(text):
            out[family.name] = {
                "type": family.type,
                "samples": [
                    {"name": s.name, "labels": s.labels, "value": s.value}
                    for s in family.samples
                ],
            }
    except Exception as e:  # the parser raises plain ValueError and friends
        print(f"unparseable metrics: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
