#!/usr/bin/env bash
# The whole system on the fixtures, against the local services (`make demo` starts them and
# exports their addresses): upload the fixture files to the local S3 under the real key
# templates, migrate, import the fixture cities, create the queue + dead-letter queue, enqueue
# the fixture jobs (native and old-system messages), run the worker until the queue is empty,
# add new towns to a year that is already loaded, print the status. Idempotent: a re-run reloads
# the same jobs (replacing, never duplicating) and skips the towns' job, which is done.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${NEXINGEST_DATABASE_URL:?not set; run through 'make demo' (or eval \"\$(scripts/services.sh env)\")}"
: "${NEXINGEST_AWS_ENDPOINT_URL:?not set; run through 'make demo'}"
export NEXINGEST_SCHEMA=${NEXINGEST_SCHEMA:-demo}
QUEUE=${NEXINGEST_DEMO_QUEUE:-nexingest-demo}
GEO_BUCKET=nexingest-demo-geo
export NEXINGEST_ALLOWED_BUCKETS=$GEO_BUCKET

echo "== build"
cargo build --release --locked -q -p worker
BIN=${CARGO_TARGET_DIR:-target}/release/nexingest

echo "== upload fixtures to the local S3 ($NEXINGEST_AWS_ENDPOINT_URL)"
.venv/bin/python - "$GEO_BUCKET" <<'PY'
import json, os, sys
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["NEXINGEST_AWS_ENDPOINT_URL"])
have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
manifest = json.load(open("fixtures/data/MANIFEST.json"))
n = 0
for f in manifest["files"]:
    if f.get("kind") != "dataset":
        continue
    if f["bucket"] not in have:
        s3.create_bucket(Bucket=f["bucket"]); have.add(f["bucket"])
    s3.upload_file(os.path.join("fixtures/data", f["path"]), f["bucket"], f["s3_key"])
    n += 1
geo = sys.argv[1]
if geo not in have:
    s3.create_bucket(Bucket=geo)
s3.upload_file("fixtures/data/geojson/cities.geojson", geo, "cities.geojson")
print(f"uploaded {n} NetCDF files and 1 GeoJSON")
PY

echo "== migrate (schema $NEXINGEST_SCHEMA)"
"$BIN" migrate

echo "== import locations"
"$BIN" import-locations fixtures/data/geojson/cities.geojson --source demo-cities

echo "== create the queue and enqueue the fixture jobs"
common=(--queue-name "$QUEUE" --create-queue --max-receive-count 3 --update-existing)
"$BIN" enqueue "${common[@]}" --dataset NEX-GDDP --scenario rcp85 --models ACCESS1-0 --years 2008
"$BIN" enqueue "${common[@]}" --dataset NEX-GDDP-CMIP6 --scenario ssp245 --models CanESM5 --years 2016
"$BIN" enqueue "${common[@]}" --dataset NEX-GDDP-CMIP6 --scenario ssp585 --models UKESM1-0-LL --years 2015 \
  --locations "geojson:s3://$GEO_BUCKET/cities.geojson"
# The old system's message form (scenario_id/model_id, year as a string, the location table).
"$BIN" enqueue "${common[@]}" --dataset LOCA --scenario rcp45 --models CCSM4 --years 2006 \
  --locations cities --legacy-format

echo "== run the worker until the queue is empty"
"$BIN" run --queue-name "$QUEUE" --until-empty --wait-time 2 --jobs 2

echo "== add five new towns to a year already loaded for the cities (the runbooks' new-locations step)"
.venv/bin/python - "$GEO_BUCKET" <<'PY'
import json, os, sys
import boto3
towns = [("tracy", 37.7397, -121.4252), ("stockton", 37.9577, -121.2908),
         ("manteca", 37.7974, -121.2161), ("lodi", 38.1302, -121.2724),
         ("brentwood", 37.9319, -121.6958)]
doc = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"id": n, "name": n},
     "geometry": {"type": "Point", "coordinates": [lon, lat]}} for n, lat, lon in towns]}
boto3.client("s3", endpoint_url=os.environ["NEXINGEST_AWS_ENDPOINT_URL"]).put_object(
    Bucket=sys.argv[1], Key="new-towns.geojson", Body=json.dumps(doc).encode())
PY
# No --update-existing: the cities' rows stay as they are, the towns' cells are appended; run
# again, the job is recognised as done and skipped.
"$BIN" enqueue --queue-name "$QUEUE" --dataset NEX-GDDP-CMIP6 --scenario ssp585 --models UKESM1-0-LL \
  --years 2015 --locations "geojson:s3://$GEO_BUCKET/new-towns.geojson"
"$BIN" run --queue-name "$QUEUE" --until-empty --wait-time 2 --jobs 2

echo "== status"
"$BIN" status
