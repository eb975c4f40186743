"""A third-party SMS platform for the tests, speaking the contract's sendBatch and sendDetails:
it fetches each batch's phone file over HTTP, sends each outId once, and reports numbers ending
in 3 as failed and numbers ending in 9 never."""

from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from connectors.http_server import JsonServer


class FileServer:
    """Serves a folder over HTTP (the bucket the platform reads phone files from)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a: None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmsPlatform:
    def __init__(self, name: str = "acme-sms") -> None:
        self.name = name
        self.batches: dict[str, dict] = {}   # outId -> the request and its phones
        self.send_calls = 0
        self.detail_calls = 0
        self.lock = threading.Lock()
        self.http = JsonServer(self.handle).start()

    @property
    def url(self) -> str:
        return self.http.base_url

    def reply(self, **extra) -> dict:
        return {"platformName": self.name, "code": "OK", "message": "", "requestId": "r1", **extra}

    def handle(self, method: str, path: str, headers, body: bytes):
        request = json.loads(body or b"{}")
        if path == "/sms/sendBatch":
            with self.lock:
                self.send_calls += 1
                if request["outId"] in self.batches:  # the same outId again: sent already
                    return 200, self.reply(bizId=self.batches[request["outId"]]["bizId"])
            phones = requests.get(request["phoneOssUrl"], timeout=10).text.split()
            with self.lock:
                self.batches[request["outId"]] = {"request": request, "phones": phones,
                                                  "bizId": f"biz{len(self.batches)}"}
                return 200, self.reply(bizId=self.batches[request["outId"]]["bizId"])
        if path == "/sms/sendDetails":
            with self.lock:
                self.detail_calls += 1
                batch = self.batches.get(request["outId"], {"phones": []})
            reported = [p for p in batch["phones"] if not p.endswith("9")]
            size, page = int(request["pageSize"]), int(request["currentPage"])
            rows = [{"phoneNum": p, "outId": request["outId"], "sendStatus": 1 if p.endswith("3") else 2,
                     "errCode": "MOBILE_NOT_ON_SERVICE" if p.endswith("3") else "DELIVERED",
                     "content": "", "sendDate": "", "receiveDate": "", "templateCode": "T1"}
                    for p in reported[(page - 1) * size: page * size]]
            return 200, self.reply(sendDetailDTOs=rows, totalCount=len(reported))
        return 404, self.reply(code="NOT_FOUND")

    def stop(self) -> None:
        self.http.stop()
