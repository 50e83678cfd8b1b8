"""What rolling writes under a stream that pauses (ADR 0006).

Against the local stack (`./dev up`: command API on 8470, ClickHouse on
18123): sends HISTORY views, one a minute back from now (distinct rollup
cells), waits until they are projected and rolled, then BURSTS bursts of
SIZE views (3 unless given), each followed by PAUSE seconds (longer than
the three quiet looks of the projector's rolling, so each pause rolls a
short range), and prints the ranges done and the rollup rows written
during the bursts, and what the rollup tables hold at the end.

usage: local/rollup-pauses.py HISTORY BURSTS PAUSE [SIZE [WAIT]]
(WAIT: seconds to wait before the final report, for retired ranges' rows
to be deleted)
e.g.:  ./dev clean && ./dev up && python3 local/rollup-pauses.py 20000 48 4.5
"""
import os, urllib.error, json, random, sys, time, urllib.request, datetime

history, bursts, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
size = int(sys.argv[4]) if len(sys.argv) > 4 else 3
wait = float(sys.argv[5]) if len(sys.argv) > 5 else 0
token = open(os.path.join(os.path.dirname(__file__), "..", ".tally", "token")).read().strip()
rng = random.Random(7)

def post(path, body):
    req = urllib.request.Request("http://127.0.0.1:8470" + path, data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    while True:
        try:
            with urllib.request.urlopen(req) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            if e.code != 429:
                raise
            time.sleep(float(e.headers.get("Retry-After", "1")))

def ch(sql):
    req = urllib.request.Request("http://127.0.0.1:18123/?database=tally", data=sql.encode())
    with urllib.request.urlopen(req) as r:
        return r.read().decode().strip()

def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

now = time.time()
n = 0
def event(at):
    global n
    n += 1
    return {"event_id": f"trickle-{int(now)}-{n}", "type": "view", "occurred_at": iso(at),
            "post_id": f"post-{rng.randint(1, 24)}", "payload": {"count": 1}}

# History: one event a minute over the last `history` minutes (distinct cells).
for start in range(0, history, 1000):
    post("/v1/events/batch", [event(now - 60 * (history - i) ) for i in range(start, min(history, start + 1000))])

def rolled():
    return int(ch("SELECT max(hi) FROM rollup_ranges") or 0)

def position():
    return int(ch("SELECT min(position) FROM (SELECT model, argMax(position, updated_ms) AS position FROM projection_positions GROUP BY model)") or 0)

# Wait for history to be projected and rolled.
for _ in range(600):
    p = position()
    if p > 0 and rolled() >= p:
        break
    time.sleep(0.5)
t0 = int(ch("SELECT toUInt64(now()) * 1000"))
time.sleep(1.5)
print("history rolled to", rolled(), "position", position())
for b in range(bursts):
    post("/v1/events/batch", [event(time.time()) for _ in range(size)])
    time.sleep(pause)
for _ in range(60):
    p = position()
    if rolled() >= p:
        break
    time.sleep(0.5)
print("after", bursts, "bursts: position", position(), "rolled", rolled())
print("ranges done during the bursts (level, ranges, sequences):")
print(ch(f"SELECT level, count(), sum(hi - lo) FROM rollup_ranges WHERE done_ms > {t0} GROUP BY level ORDER BY level"))
print("rollup rows written during the bursts, by level:")
print(ch(f"SELECT level, count() FROM rollups WHERE attempt IN (SELECT attempt FROM rollup_ranges WHERE done_ms > {t0}) GROUP BY level ORDER BY level"))
print("rows of the latest base:", ch("SELECT count() FROM rollups WHERE attempt = (SELECT argMax(attempt, hi) FROM rollup_ranges WHERE level = 1)"))
time.sleep(wait)
print("at the end: rollups rows", ch("SELECT count() FROM rollups"),
      "| ranges recorded (level: count)", ch("SELECT groupArray((level, n)) FROM (SELECT level, count() AS n FROM rollup_ranges GROUP BY level ORDER BY level)"),
      "| rollups bytes on disk", ch("SELECT sum(bytes) FROM system.parts WHERE active AND database = currentDatabase() AND table = 'rollups'"))
