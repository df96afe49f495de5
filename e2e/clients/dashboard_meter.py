"""The tutorial's smart meter as the dashboard test needs it: stays connected and does what a
real device does, with paho-mqtt and no subscriptions (replies and pushes reach it anyway).

1. Reports its metadata (model, mac) on `epmx/<token>/update/keys/<rid>`.
2. Sends a batch of temperature samples over the last minutes to `dcx`, then one every second.
3. Applies every configuration pushed on `cmx/<token>/config/json/status` (`applied/json`).
4. Answers every command pushed on `cex/<token>/command/<type>/status` with status 200.

Prints one JSON line per event; runs until stdin closes (its parent is gone) or --seconds pass.
"""
import argparse
import json
import random
import sys
import threading
import time

import paho.mqtt.client as mqtt

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--app-version", required=True)
parser.add_argument("--token", required=True)
parser.add_argument("--seconds", type=float, default=180)
args = parser.parse_args()


def topic(ext, path):
    return f"kp1/{args.app_version}/{ext}/{args.token}/{path}"


def event(**fields):
    print(json.dumps(fields), flush=True)


def on_config(client, userdata, message):
    body = json.loads(message.payload)
    client.publish(topic("cmx", "applied/json"), json.dumps({"configId": body["configId"], "statusCode": 200}))
    event(applied=body["configId"], config=body.get("config"))


def on_command(client, userdata, message):
    command_type = message.topic.split("/")[-2]
    results = [{"id": c["id"], "statusCode": 200, "payload": {"done": command_type, "request": c.get("payload")}}
               for c in json.loads(message.payload)]
    client.publish(topic("cex", f"result/{command_type}"), json.dumps(results))
    event(answered=command_type, ids=[r["id"] for r in results])


def on_connect(client, userdata, flags, reason_code, properties):
    rid = random.randint(1, 99)
    client.publish(topic("epmx", f"update/keys/{rid}"),
                   json.dumps({"model": "MySmartMeter A300", "mac": "00-14-22-01-23-45"}))
    now = int(time.time() * 1000)
    batch = [{"temperature": 20 + i * 0.5, "timestamp": now - (5 - i) * 60_000} for i in range(5)]
    client.publish(topic("dcx", "json"), json.dumps(batch))
    event(connected=True)


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", clean_session=True, protocol=mqtt.MQTTv311)
client.on_connect = on_connect
client.message_callback_add(topic("cmx", "config/json/status"), on_config)
client.message_callback_add(topic("cex", "command/+/status"), on_command)
client.connect("127.0.0.1", args.port, keepalive=30)
client.loop_start()

stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
deadline = time.monotonic() + args.seconds
reading = 22.5
while not stop.is_set() and time.monotonic() < deadline:
    reading += random.uniform(-0.3, 0.3)
    client.publish(topic("dcx", "json"), json.dumps({"temperature": round(reading, 2)}))
    stop.wait(1)
client.loop_stop()
client.disconnect()
