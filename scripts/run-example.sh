#!/usr/bin/env bash
# Print a ready-to-paste curl request for a running `infergate serve --config CONFIG`.
# Reads the listen address from [server] and the first `task = "chat"` model from
# [[models]]; falls back to 127.0.0.1:8080 and synthetic-chat.
#   scripts/run-example.sh [CONFIG] [API_KEY]
set -euo pipefail
config="${1:-examples/embedded.toml}"
key="${2:-sk-infergate-dev}"
listen="" model=""
if [[ -f "$config" ]]; then
    # TOML subset: `key = "value"` lines; name/task may come in either order.
    read -r listen model < <(awk '
        function val(line) { sub(/^[^=]*=[ \t]*"/, "", line); sub(/".*$/, "", line); return line }
        /^[ \t]*\[/            { section = $0; name = ""; task = "" }
        section ~ /^[ \t]*\[server\]/ && /^[ \t]*listen[ \t]*=/ { listen = val($0) }
        section ~ /^[ \t]*\[\[models\]\]/ {
            if ($0 ~ /^[ \t]*name[ \t]*=/) name = val($0)
            if ($0 ~ /^[ \t]*task[ \t]*=/) task = val($0)
            if (model == "" && name != "" && task == "chat") model = name
        }
        END { print (listen == "" ? "-" : listen), (model == "" ? "-" : model) }
    ' "$config")
fi
[[ -z "$listen" || "$listen" == - ]] && listen="127.0.0.1:8080"
[[ -z "$model" || "$model" == - ]] && model="synthetic-chat"
# A wildcard listen address is reachable on loopback.
listen="${listen/0.0.0.0/127.0.0.1}"
cat <<MSG
Try it (from another terminal):
  curl -s http://$listen/v1/chat/completions -H 'Authorization: Bearer $key' -H 'Content-Type: application/json' -d '{"model":"$model","messages":[{"role":"user","content":"Hello"}]}'
MSG
