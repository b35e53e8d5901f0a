#!/usr/bin/env bash
# Rebuild dashboard-schema.json from Grafana's published schema package, @grafana/schema on npm.
# The package ships the CUE-generated TypeScript types of the dashboard (raw/dashboard/x) and of
# each panel plugin's options (raw/composable/<panel>/panelcfg/x); ts-json-schema-generator turns
# them into JSON Schema (draft 7, additionalProperties false, as the types are closed).
#   tests/support/grafana_schema/refresh.sh [VERSION]    (needs node and npm; not run by tests)
set -euo pipefail
version=${1:-13.2.3}
generator=ts-json-schema-generator@2.9.0
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# The generator first: npm install prunes packages it did not install itself.
npm install --silent --no-save --no-audit --no-fund "$generator" >/dev/null
npm pack --silent "@grafana/schema@$version" >/dev/null
mkdir -p node_modules/@grafana/schema
tar xzf "grafana-schema-$version.tgz" -C node_modules/@grafana/schema --strip-components 1
echo '{"compilerOptions": {"module": "nodenext", "moduleResolution": "nodenext", "skipLibCheck": true}}' \
  > tsconfig.json
types=node_modules/@grafana/schema/dist/types/raw
gen() {  # gen FILE TYPE OUT
  npx --no-install ts-json-schema-generator --tsconfig tsconfig.json --no-type-check \
    --path "$1" --type "$2" -o "$3"
}
gen "$types/dashboard/x/types.gen.d.ts" Dashboard dashboard.json
panels="timeseries stat bargauge table heatmap"
for panel in $panels; do
  gen "$types/composable/$panel/panelcfg/x/types.gen.d.ts" Options "$panel.Options.json"
done
# Panels whose plugin defines its own fieldConfig.defaults.custom (stat and bargauge have none).
for panel in timeseries table heatmap; do
  gen "$types/composable/$panel/panelcfg/x/types.gen.d.ts" FieldConfig "$panel.FieldConfig.json"
done
VERSION=$version GENERATOR=$generator PANELS=$panels python3 - "$here/dashboard-schema.json" <<'PY'
import json, os, sys
from pathlib import Path
panels = {}
for name in os.environ["PANELS"].split():
    panels[name] = {"options": json.loads(Path(f"{name}.Options.json").read_text())}
    custom = Path(f"{name}.FieldConfig.json")
    if custom.exists():
        panels[name]["custom"] = json.loads(custom.read_text())
doc = {
    "source": f"npm @grafana/schema@{os.environ['VERSION']} (dist/types/raw), converted by "
              f"{os.environ['GENERATOR']}; regenerate with tests/support/grafana_schema/refresh.sh",
    "license": "Apache-2.0, Grafana Labs (the package's LICENSE_APACHE2)",
    "dashboard": json.loads(Path("dashboard.json").read_text()),
    "panels": panels,
}
Path(sys.argv[1]).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
PY
echo "wrote $here/dashboard-schema.json from @grafana/schema@$version"
