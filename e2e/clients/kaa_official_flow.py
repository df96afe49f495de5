"""A device written the way the official Kaa Python client (kaaproject/mqtt-client-python) works,
doing its whole flow: paho-mqtt, MQTT 3.1.1, empty client id, clean session, QoS 0, never
SUBSCRIBEs, callbacks for exact topics only, random request ids 1..99.

1. On connect: `bcx/<token>/token` without request id, waiting for `{"token"}` on `.../status`.
2. Reports metadata (`epmx/<token>/update/keys/<rid>`) and its firmware version to `cmx_ota`
   (`applied/json` with a configId that instance never issued).
3. Configuration handler on `cmx/<token>/config/json/status` (pushed, no request): applies it and
   reports `applied/json` with null statusCode and reasonPhrase, as the library sends them.
4. Command handler on `cex/<token>/command/switch/status` (pushed): answers an array of results.
5. Uploads a file over HTTP with `X-Auth-Token` (name with '/' replaced by '_').

Prints one JSON line with what happened; exits 0 when all of it did (1 on timeout).
"""
import argparse
import json
import random
import sys
import threading
import urllib.request

import paho.mqtt.client as mqtt

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--http", required=True)
parser.add_argument("--app-version", required=True)
parser.add_argument("--token", required=True)
args = parser.parse_args()

av, token = args.app_version, args.token


def topic(ext, path):
    return f"kp1/{av}/{ext}/{token}/{path}"


report = {}
token_received = threading.Event()
configured = threading.Event()
commanded = threading.Event()
metadata_done = threading.Event()
rid = random.randint(1, 99)


def on_token(client, userdata, message):
    report["uploadToken"] = json.loads(message.payload)["token"]
    token_received.set()


def on_config(client, userdata, message):
    body = json.loads(message.payload)
    report["config"] = {k: v for k, v in body["config"].items()}
    client.publish(topic("cmx", "applied/json"),
                   json.dumps({"configId": body["configId"], "statusCode": None, "reasonPhrase": None}))
    configured.set()


def on_command(client, userdata, message):
    commands = json.loads(message.payload)
    results = [{"id": c["id"], "statusCode": 200, "payload": {"switched": c["payload"].get("on")}}
               for c in commands]
    client.publish(topic("cex", "result/switch"), json.dumps(results))
    report.setdefault("commands", []).extend(c["id"] for c in commands)
    commanded.set()


def on_metadata(client, userdata, message):
    report["metadataReply"] = message.topic.rsplit("/", 1)[-1]
    metadata_done.set()


def on_other(client, userdata, message):
    report.setdefault("other", []).append(message.topic)


def on_connect(client, userdata, flags, reason_code, properties):
    client.publish(topic("bcx", "token"), "")


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", clean_session=True, protocol=mqtt.MQTTv311)
client.on_message = on_other
client.on_connect = on_connect
client.message_callback_add(topic("bcx", "token/status"), on_token)
client.message_callback_add(topic("cmx", "config/json/status"), on_config)
client.message_callback_add(topic("cex", "command/switch/status"), on_command)
client.message_callback_add(topic("epmx", f"update/keys/{rid}/status"), on_metadata)
client.connect("127.0.0.1", args.port, keepalive=60)
client.loop_start()

ok = token_received.wait(10)
if ok:
    client.publish(topic("epmx", f"update/keys/{rid}"), json.dumps({"fw": "1.0.2"}))
    client.publish(topic("cmx_ota", "applied/json"), json.dumps({"configId": "1.0.2"}))
    name = "var/log/device.log".replace("/", "_")
    request = urllib.request.Request(
        f"{args.http}/bcx/api/v1/binary-data?name={name}",
        data=b"boot ok\n",
        headers={"Content-Type": "application/octet-stream", "X-Auth-Token": report["uploadToken"]},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        report["uploadStatus"] = response.status
    ok = configured.wait(10) and commanded.wait(10) and metadata_done.wait(10)
client.loop_stop()
client.disconnect()
report.pop("uploadToken", None)
print(json.dumps(report))
sys.exit(0 if ok else 1)
