#!/usr/bin/env bash
# Loads a small, deterministic demo dataset through the command API:
# three influencers, six posts, a few hundred interactions over the last
# hours. Safe to run twice: event ids are fixed, so the second run only
# produces duplicates.
#   local/demo.sh COMMAND_URL TOKEN
set -euo pipefail
url=${1:?command API URL}
token=${2:?bearer token}

post() {
    local body=$1 status
    status=$(curl -s -o /tmp/tally-demo-answer.$$ -w '%{http_code}' -X POST "$url/v1/events" \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$body")
    if [ "$status" != 202 ]; then
        echo "demo event refused ($status): $body" >&2
        cat /tmp/tally-demo-answer.$$ >&2; echo >&2
        rm -f /tmp/tally-demo-answer.$$
        exit 1
    fi
}

ago() { date -u -d "@$(( $(date +%s) - $1 ))" +%Y-%m-%dT%H:%M:%SZ; }

platforms=(instagram tiktok youtube)
comments=("love this" "where can I buy it?" "so good" "meh" "best post this week")
count=0
for p in 1 2 3 4 5 6; do
    influencer="inf-$(( (p - 1) / 2 + 1 ))"
    platform=${platforms[$(( (p - 1) / 2 ))]}
    base="\"post_id\":\"post-$p\",\"influencer_id\":\"$influencer\",\"campaign_id\":\"spring-launch\",\"platform\":\"$platform\""
    # Popularity falls with the post number, so rankings have a shape.
    weight=$(( 7 - p ))
    for ((i = 1; i <= weight * 6; i++)); do
        post "{\"event_id\":\"demo-p$p-like-$i\",\"type\":\"like\",\"occurred_at\":\"$(ago $(( i * 97 % 7200 )))\",\"user_id\":\"user-$i\",$base}"
        count=$((count + 1))
    done
    for ((i = 1; i <= weight; i++)); do
        post "{\"event_id\":\"demo-p$p-view-$i\",\"type\":\"view\",\"occurred_at\":\"$(ago $(( i * 331 % 7200 )))\",$base,\"payload\":{\"count\":$(( weight * 150 + i * 7 ))}}"
        post "{\"event_id\":\"demo-p$p-comment-$i\",\"type\":\"comment\",\"occurred_at\":\"$(ago $(( i * 211 % 7200 )))\",\"user_id\":\"user-$i\",$base,\"payload\":{\"text\":\"${comments[$(( i % 5 ))]}\"}}"
        post "{\"event_id\":\"demo-p$p-click-$i\",\"type\":\"click\",\"occurred_at\":\"$(ago $(( i * 173 % 7200 )))\",\"user_id\":\"user-$i\",$base,\"payload\":{\"url\":\"https://shop.example/p$p\"}}"
        count=$((count + 3))
    done
    for ((i = 1; i <= weight / 2; i++)); do
        post "{\"event_id\":\"demo-p$p-share-$i\",\"type\":\"share\",\"occurred_at\":\"$(ago $(( i * 53 % 7200 )))\",\"user_id\":\"user-$i\",$base}"
        post "{\"event_id\":\"demo-p$p-unlike-$i\",\"type\":\"unlike\",\"occurred_at\":\"$(ago $(( i * 29 % 7200 )))\",\"user_id\":\"user-$i\",$base}"
        count=$((count + 2))
    done
done
rm -f /tmp/tally-demo-answer.$$
echo "  posted $count demo events for posts post-1 .. post-6"
