#!/usr/bin/env bash
# The layer rule of src/ (see src/lib.rs): a module uses only its own layer
# and those below it,
#     api → bgw → engine → catalog → plan → pg → {error, gucs}
# so nothing points up and there are no cycles between layers. Fails, naming
# each offending reference, when a file under src/<layer>/ names a module of
# a higher layer through `crate::`. lib.rs (wiring) and pg_tests.rs (tests)
# are exempt.
set -euo pipefail
cd "$(dirname "$0")/../src"
python3 - <<'PY'
import pathlib, re, sys
rank = {"error": 0, "gucs": 0, "pg": 1, "plan": 2, "catalog": 3, "engine": 4, "bgw": 5, "api": 6}
bad = []
for path in sorted(pathlib.Path(".").rglob("*.rs")):
    if path.name in ("lib.rs", "pg_tests.rs"):
        continue
    own = path.parts[0] if len(path.parts) > 1 else path.stem
    if own not in rank:
        bad.append(f"{path}: not in any layer (add it to scripts/layers.sh)")
        continue
    text = path.read_text()
    names = []
    for m in re.finditer(r"crate::(\{[^}]*\}|[a-z_]+)", text):
        target = m.group(1)
        if target.startswith("{"):
            names += [item.strip().split("::")[0] for item in target[1:-1].split(",") if item.strip()]
        else:
            names.append(target)
    for name in sorted(set(names)):
        if name not in rank:
            bad.append(f"{path}: crate::{name} is in no layer")
        elif rank[name] > rank[own]:
            bad.append(f"{path} ({own}) uses crate::{name}, a higher layer")
if bad:
    print("layer check failed:\n  " + "\n  ".join(bad))
    sys.exit(1)
print("layer check: every module uses only its own layer and those below")
PY
