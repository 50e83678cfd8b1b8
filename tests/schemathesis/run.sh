#!/usr/bin/env bash
# Schemathesis against both APIs, from the one OpenAPI document: every
# documented operation gets generated input, valid and invalid, and the run
# fails on any server error and on any answer the document does not
# describe (status, content type, headers, body schema).
#
#   tests/schemathesis/run.sh DOCUMENT COMMAND_URL QUERY_URL WRITE_TOKEN READ_TOKEN
#
# The integration test `openapi::schemathesis_*` starts a stack and runs
# this; `./dev test` installs schemathesis. Environment:
#   SCHEMATHESIS            the schemathesis executable (default: on PATH)
#   SCHEMATHESIS_EXAMPLES   generated cases per operation (default 40)
#   SCHEMATHESIS_SEED       the seed, fixed so that a failure reproduces (default 1)
#   SCHEMATHESIS_REPORTS    where to write JUnit reports (default: none)
set -euo pipefail

[ $# -eq 5 ] || { sed -n 2,16p "$0" >&2; exit 2; }
document=$1 command_url=$2 query_url=$3 write_token=$4 read_token=$5
schemathesis=${SCHEMATHESIS:-schemathesis}

checks=not_a_server_error,status_code_conformance,content_type_conformance
checks+=,response_headers_conformance,response_schema_conformance

run() { # name base-url token tag-regex
    local name=$1 url=$2 token=$3 tags=$4 report=()
    if [ -n "${SCHEMATHESIS_REPORTS:-}" ]; then
        mkdir -p "$SCHEMATHESIS_REPORTS"
        report=(--report junit --report-junit-path "$SCHEMATHESIS_REPORTS/$name.xml")
    fi
    echo "== schemathesis: $name API ($url)"
    "$schemathesis" run "$document" \
        --url "$url" \
        --include-tag-regex "$tags" \
        --header "Authorization: Bearer $token" \
        --checks "$checks" \
        --phases examples,coverage,fuzzing \
        --max-examples "${SCHEMATHESIS_EXAMPLES:-40}" \
        --seed "${SCHEMATHESIS_SEED:-1}" \
        --workers 2 \
        --request-timeout 20 \
        --suppress-health-check all \
        --warnings off \
        ${report[@]+"${report[@]}"}
}

status=0
# The live stream (tag `live`) never ends, so it is left to its own test.
run command "$command_url" "$write_token" '^(ingest|likes|webhooks|service)$' || status=1
run query "$query_url" "$read_token" '^(reports|service)$' || status=1
exit $status
