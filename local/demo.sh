#!/usr/bin/env bash
# Loads a small, deterministic demo dataset through the command API: a
# campaign, eight influencers (the first three in the campaign), their
# posts, a few hundred interactions over the last hours and a day of hourly
# history, two weeks of follower counts, conversions, and a bot's burst of
# clicks, so every panel of the dashboard has something to show. Safe to
# run twice: event ids are fixed, so the second run only produces
# duplicates.
#   local/demo.sh COMMAND_URL TOKEN
set -euo pipefail
url=${1:?command API URL}
token=${2:?bearer token}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tally-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Sends "$@" to curl until it is not a 429, waiting as long as the answer's
# Retry-After says (1 s without one, at most 30 s); prints the status. The
# body is in $tmp/answer.
send() {
    local status try wait
    for try in 1 2 3 4 5 6 7 8 9 10; do
        status=$(curl -s -o "$tmp/answer" -D "$tmp/headers" -w '%{http_code}' "$@")
        [ "$status" = 429 ] || break
        wait=$(sed -n 's/^[Rr][Ee][Tt][Rr][Yy]-[Aa][Ff][Tt][Ee][Rr]: *\([0-9][0-9]*\).*/\1/p' "$tmp/headers" | tail -n 1)
        wait=${wait:-1}
        [ "$wait" -le 30 ] || wait=30
        sleep "$wait"
    done
    echo "$status"
}

post() {
    local body=$1 status
    status=$(send -X POST "$url/v1/events" \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$body")
    if [ "$status" != 202 ]; then
        echo "demo event refused ($status): $body" >&2
        cat "$tmp/answer" >&2; echo >&2
        exit 1
    fi
}

ago() { date -u -d "@$(( $(date +%s) - $1 ))" +%Y-%m-%dT%H:%M:%SZ; }

# NDJSON lines from stdin as one batch (at most 1,000 events), waiting out
# the rate limit (a batch spends one unit per event).
batch() {
    local status body="$tmp/batch"
    cat > "$body"
    status=$(send -X POST "$url/v1/events/batch" \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/x-ndjson' --data-binary @"$body")
    if [ "$status" != 202 ]; then
        echo "demo batch refused ($status):" >&2
        cat "$tmp/answer" >&2; echo >&2
        exit 1
    fi
}

# The catalogue: who posts what, for which campaign.
catalogue() {
    echo "{\"event_id\":\"demo-campaign-spring\",\"type\":\"campaign_created\",\"occurred_at\":\"$(ago 1209600)\",\"campaign_id\":\"spring-launch\",\"payload\":{\"name\":\"Spring launch\",\"budget\":5000,\"currency\":\"EUR\",\"starts_at\":\"$(ago 1209600)\",\"ends_at\":\"$(ago -2592000)\"}}"
    local names=(Ava Ben Cleo Dev Emi Finn Gia Hugo) k platform
    for k in 1 2 3 4 5 6 7 8; do
        platform=${platforms[$(( (k - 1) % 3 ))]}
        echo "{\"event_id\":\"demo-influencer-$k\",\"type\":\"influencer_registered\",\"occurred_at\":\"$(ago 1300000)\",\"influencer_id\":\"inf-$k\",\"platform\":\"$platform\",\"payload\":{\"handle\":\"@${names[$((k - 1))],,}\",\"name\":\"${names[$((k - 1))]}\",\"tags\":[\"demo\"]}}"
    done
    local p influencer campaign types=(reel image video short story reel)
    for p in 1 2 3 4 5 6 7 8 9 10 11; do
        if [ "$p" -le 6 ]; then
            k=$(( (p - 1) / 2 + 1 )); campaign=",\"campaign_id\":\"spring-launch\""
        else
            k=$(( p - 3 )); campaign=""
        fi
        platform=${platforms[$(( (k - 1) % 3 ))]}
        echo "{\"event_id\":\"demo-post-$p\",\"type\":\"post_published\",\"occurred_at\":\"$(ago $(( 172800 + p * 3600 )))\",\"post_id\":\"post-$p\",\"influencer_id\":\"inf-$k\",\"platform\":\"$platform\"$campaign,\"payload\":{\"content_type\":\"${types[$(( p % 6 ))]}\",\"tags\":[\"spring\"]}}"
    done
}

# A day of hourly history on every post, two weeks of follower counts, a
# few conversions and follows, and one bot's burst of clicks on post-2.
history() {
    local p h n i k base
    # Activity by hour, as hours ago: busy evenings, quiet nights.
    local wave=(0 9 11 12 10 8 6 4 3 2 1 1 2 3 5 6 7 7 8 9 10 11 12 10 7)
    for p in 1 2 3 4 5 6 7 8 9 10 11; do
        for ((h = 1; h <= 24; h++)); do
            n=$(( wave[h] * (p <= 6 ? 7 - (p + 1) / 2 : 1) / 3 + (p * h) % 3 + 1 ))
            for ((i = 1; i <= n; i++)); do
                echo "{\"event_id\":\"demo-h$h-p$p-like-$i\",\"type\":\"like\",\"occurred_at\":\"$(ago $(( h * 3600 + i * 41 )))\",\"post_id\":\"post-$p\",\"user_id\":\"fan-$h-$i\"}"
            done
            echo "{\"event_id\":\"demo-h$h-p$p-view\",\"type\":\"view\",\"occurred_at\":\"$(ago $(( h * 3600 + 600 )))\",\"post_id\":\"post-$p\",\"payload\":{\"count\":$(( n * 40 + 25 ))}}"
        done
    done
    for k in 1 2 3 4 5 6 7 8; do
        for ((d = 14; d >= 1; d--)); do
            echo "{\"event_id\":\"demo-followers-$k-$d\",\"type\":\"follower_snapshot\",\"occurred_at\":\"$(ago $(( d * 86400 )))\",\"influencer_id\":\"inf-$k\",\"payload\":{\"followers\":$(( 20000 / k + (14 - d) * (90 - k * 9) + (d % 3) * 15 ))}}"
        done
        for ((i = 1; i <= 12 - k; i++)); do
            echo "{\"event_id\":\"demo-follow-$k-$i\",\"type\":\"follow\",\"occurred_at\":\"$(ago $(( i * 613 )))\",\"influencer_id\":\"inf-$k\",\"user_id\":\"fan-$i\"}"
        done
        echo "{\"event_id\":\"demo-unfollow-$k\",\"type\":\"unfollow\",\"occurred_at\":\"$(ago 1800)\",\"influencer_id\":\"inf-$k\",\"user_id\":\"fan-1\"}"
    done
    for i in 1 2 3 4 5; do
        p=$(( i % 3 * 2 + 1 ))
        echo "{\"event_id\":\"demo-conversion-$i\",\"type\":\"conversion\",\"occurred_at\":\"$(ago $(( i * 1500 )))\",\"post_id\":\"post-$p\",\"user_id\":\"user-$i\",\"payload\":{\"value\":$(( 40 + i * 17 )).90,\"currency\":\"EUR\",\"order_id\":\"order-$i\"}}"
    done
    base=$(ago 2400)
    for ((i = 1; i <= 14; i++)); do
        echo "{\"event_id\":\"demo-bot-$i\",\"type\":\"click\",\"occurred_at\":\"$base\",\"post_id\":\"post-2\",\"user_id\":\"bot-7\"}"
    done
}

platforms=(instagram tiktok youtube)
catalogue | batch
history > "$tmp/history"
total=$(( $(catalogue | wc -l) + $(wc -l < "$tmp/history") ))
split -l 900 "$tmp/history" "$tmp/history.part-"
for part in "$tmp"/history.part-*; do batch < "$part"; done
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
echo "  posted $(( count + total )) demo events: campaign spring-launch, influencers inf-1 .. inf-8, posts post-1 .. post-11"
