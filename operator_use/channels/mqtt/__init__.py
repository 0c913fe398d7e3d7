"""The MQTT channel: devices, home automation and scripts talk to the agent through a broker.

Topic scheme (under `topic_prefix`, default "operator", and the `agent` name, default "agent"):

    <prefix>/<agent>/in/<client>      requests from <client> (the allowlisted user id and the chat id)
    <prefix>/<agent>/out/<client>     replies, unless the request named its own reply topic
    <prefix>/<agent>/error/<client>   why a request could not be read

Requests are plain UTF-8 text or a JSON object `{"text", "audio": {"data": base64, "mime"}, "reply_to",
"id"}`. Replies are JSON events carrying the request's id: `start`, `delta` (new text), `replace` (the
whole text, when it changed other than by growing), `end`, then `done` with the full text; or, in
"final" mode, the `done` event alone. See README.md, "MQTT".
"""
