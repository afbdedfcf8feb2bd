"""A bare script that reports and returns: ``exit_script.py URL JOURNAL_DIR N FLAVOR SCOPE KEYS``.

FLAVOR "plain" reports small events, "wide" events of ~600 CJK and emoji characters.
SCOPE "main" creates the Client inside main() (dropped when main() returns, never closed);
"module" keeps it in a module global. The keys go to KEYS (one a line) before "returning"
is printed; options come from METERLINE_* variables. It never calls flush() or close().
"""

from __future__ import annotations

import sys

import meterline

url, journal_dir, n_text, flavor, scope, keys_file = sys.argv[1:7]
N = int(n_text)
WIDE = "計量課金イベント📈🚀データ" * 50  # 700 characters of 3- and 4-byte UTF-8
client: meterline.Client | None = None


def properties(i: int) -> dict[str, object]:
    if flavor == "wide":
        return {"i": i, "note": WIDE[: 560 + i % 40], "顧客": "東京🗼"}
    return {"i": i}


def report_all(target: meterline.Client) -> None:
    keys = [target.report("cust_1", "api_call", properties(i)) for i in range(N)]
    with open(keys_file, "w") as out:
        out.write("".join(k + "\n" for k in keys))


def main() -> None:
    global client
    local = meterline.Client(api_key="k", base_url=url, journal_dir=journal_dir)
    if scope == "module":
        client = local
    report_all(local)
    print("returning", flush=True)


if __name__ == "__main__":
    main()
