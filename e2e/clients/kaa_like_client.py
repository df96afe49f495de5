"""A device written the way the official Kaa Python client (kaaproject/mqtt-client-python) works:
paho-mqtt, MQTT 3.1.1, empty client id, clean session, QoS 0, never SUBSCRIBEs, random request
ids 1..99, and a callback registered for the exact reply topic only.

Reports metadata with EPMX `update/keys` (or sends `--metadata` to another EPMX `--path`), waits
for the reply, prints one JSON line with what it received, and exits 0 on success (1 on timeout).
`--transport websockets` connects over MQTT over WebSocket (paho offers the `mqtt` subprotocol),
`--ca FILE` over TLS trusting that CA, `--mqtt5` speaks MQTT 5.
"""
import argparse
import json
import random
import sys
import threading

import paho.mqtt.client as mqtt

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--app-version", required=True)
parser.add_argument("--token", required=True)
parser.add_argument("--metadata", required=True, help="JSON object")
parser.add_argument("--transport", choices=["tcp", "websockets"], default="tcp")
parser.add_argument("--ws-path", default="/mqtt")
parser.add_argument("--mqtt5", action="store_true")
parser.add_argument("--path", default="update/keys", help="EPMX resource path")
parser.add_argument("--ca", help="CA bundle (PEM): connect over TLS")
args = parser.parse_args()

request_id = random.randint(1, 99)
topic = f"kp1/{args.app_version}/epmx/{args.token}/{args.path}/{request_id}"
received = {}
done = threading.Event()


def on_reply(client, userdata, message):
    received["topic"] = message.topic
    received["payload"] = message.payload.decode()
    done.set()


def on_other(client, userdata, message):
    received.setdefault("unexpected", []).append(message.topic)


if args.mqtt5:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5,
                         transport=args.transport)
else:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", clean_session=True,
                         protocol=mqtt.MQTTv311, transport=args.transport)
if args.transport == "websockets":
    client.ws_set_options(path=args.ws_path)
if args.ca:
    client.tls_set(ca_certs=args.ca)
client.on_message = on_other
client.message_callback_add(topic + "/status", on_reply)
client.message_callback_add(topic + "/error", on_reply)
client.connect("127.0.0.1", args.port, keepalive=60)
client.loop_start()
client.publish(topic, args.metadata, qos=0)
ok = done.wait(10)
client.loop_stop()
client.disconnect()
print(json.dumps({"requestTopic": topic, **received}))
sys.exit(0 if ok else 1)
