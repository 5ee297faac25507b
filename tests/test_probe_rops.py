"""The probe's own ROP client (harness/probe/rops.py, harness/probe/mailbox.py, harness/probe/mapihttp.py) against
answers written here by hand from [MS-OXCROPS] / [MS-OXCMAPIHTTP], without sockets: request bytes as the specs lay
them out, and each way a server can answer wrong failing the mailbox step with its reason and the ROP trace so far.
The good answers of a real server are judged in tests/test_probe_mapihttp.py."""
from __future__ import annotations

import struct
from typing import List

import pytest

from harness.probe import mailbox, rops
from harness.probe.mapihttp import split_meta_tags
from harness.probe.report import StepFailed

INBOX = bytes.fromhex("0100000000000005")
MID = bytes.fromhex("0100000000000100")
EC_NOT_FOUND, EC_NULL_OBJECT = 0x8004010F, 0x4B9


def utf16z(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\x00\x00"


def response(rop_bytes: bytes, handles: List[int]) -> bytes:
    return struct.pack("<H", 2 + len(rop_bytes)) + rop_bytes + struct.pack(f"<{len(handles)}L", *handles)


def header(rop_id: int, index: int, code: int = 0) -> bytes:
    return struct.pack("<BBL", rop_id, index, code)


def inbox_listing(rows: List[bytes]) -> bytes:
    return (header(0x02, 1) + b"\x00\x00" + header(0x05, 2) + struct.pack("<L", len(rows)) + header(0x12, 2) + b"\x00"
            + header(0x15, 2) + struct.pack("<BH", 2, len(rows)) + b"".join(rows))


def row(subject: str, mid: bytes = MID) -> bytes:
    return b"\x00" + utf16z(subject) + utf16z("IPM.Note") + mid


class Server:
    """Answers the probe's ROP buffers in turn with the given responses, keeping what it was sent."""

    def __init__(self, *answers: bytes):
        self.answers, self.sent = list(answers), []

    def __call__(self, payload: bytes) -> bytes:
        self.sent.append(payload)
        return self.answers.pop(0)


def test_request_buffers_are_laid_out_as_ms_oxcrops_says():
    logon = rops.RopBuffer([rops.HANDLE_NONE]).logon("/o=Contoso/cn=alice", 0).payload()
    dn = b"/o=Contoso/cn=alice\x00"
    assert logon == (struct.pack("<H", 2 + 14 + len(dn)) + b"\xfe\x00\x00\x01" + struct.pack("<LLH", 0x0100000C, 0,
                                                                                           len(dn)) + dn
                     + b"\xff\xff\xff\xff")
    listing = (rops.RopBuffer([7, rops.HANDLE_NONE, rops.HANDLE_NONE]).open_folder(0, 1, INBOX).contents_table(1, 2)
               .set_columns(2, [0x0037001F]).query_rows(2, [0x0037001F], 50)).payload()
    assert listing == (struct.pack("<H", 2 + 13 + 5 + 10 + 7) + b"\x02\x00\x00\x01" + INBOX + b"\x00"
                       + b"\x05\x00\x01\x02\x00" + b"\x12\x00\x02\x00\x01\x00\x1f\x00\x37\x00"
                       + b"\x15\x00\x02\x00\x01\x32\x00" + struct.pack("<3L", 7, rops.HANDLE_NONE, rops.HANDLE_NONE))
    assert rops.wrap(b"abc") == struct.pack("<HHHH", 0, 4, 3, 3) + b"abc"


def test_ec_do_rpc_ext2_stub_is_the_ndr_of_ms_oxcrpc():
    cxh = bytes(range(20))
    stub = rops.ec_do_rpc_ext2_request(cxh, b"\x01\x02\x03\x04\x05")
    assert stub == (cxh + struct.pack("<LL", 3, 5) + b"\x01\x02\x03\x04\x05\x00\x00\x00"
                    + struct.pack("<5L", 5, 0x40000, 0, 0, 0x1008))
    answer = (cxh + struct.pack("<LLLL", 0, 3, 0, 3) + b"xyz\x00" + struct.pack("<L", 3)
              + struct.pack("<LLL", 0, 0, 0) + struct.pack("<LLL", 0, 0, 0x4B9))
    assert rops.ec_do_rpc_ext2_response(answer) == (0x4B9, cxh, b"xyz")


def test_xor_magic_is_undone_and_compression_refused():
    data = b"\x04\x00\xaa"
    obfuscated = struct.pack("<HHHH", 0, 6, 3, 3) + bytes(b ^ 0xA5 for b in data)
    assert rops.unwrap(obfuscated) == [data]
    with pytest.raises(rops.RopMalformed, match="compressed"):
        rops.unwrap(struct.pack("<HHHH", 0, 5, 3, 9) + data)
    with pytest.raises(rops.RopMalformed):
        rops.unwrap(struct.pack("<HHHH", 0, 4, 9, 9) + data)


def test_an_inbox_is_listed_and_its_first_message_read():
    server = Server(
        response(inbox_listing([row("Hello"), row("Second", bytes.fromhex("0100000000000101"))]), [7, 8, 9]),
        response(header(0x03, 1) + b"\x00" + b"\x00" + b"\x04" + utf16z("Hello") + struct.pack("<HH", 1, 0)
                 + b"\x01" + b"\x01" + struct.pack("<HH", 1252, 0) + struct.pack("<H", 3) + b"abc"
                 + header(0x07, 1) + b"\x01" + b"\x00" + utf16z("Hello") + b"\x0a" + struct.pack("<L", 0x8007000E),
                 [8, 10]))
    message, evidence = mailbox.read_inbox(server, 7, INBOX)
    assert message == 'Inbox opened: 2 item(s); read "Hello" (0 characters of body)'
    trace = evidence["rops"]
    assert [entry["rop"] for entry in trace] == ["RopOpenFolder", "RopGetContentsTable", "RopSetColumns",
                                                 "RopQueryRows", "RopOpenMessage", "RopGetPropertiesSpecific"]
    assert trace[3]["rows"][1] == {"subject": "Second", "message_class": "IPM.Note", "mid": "0100000000000101"}
    assert trace[4]["recipient_count"] == 1                  # its recipient row skipped by its size
    # the second buffer opens the message through the folder's server handle from the first answer
    assert server.sent[1].endswith(struct.pack("<LL", 8, rops.HANDLE_NONE)) and MID in server.sent[1]


def test_an_empty_inbox_passes_without_reading():
    message, evidence = mailbox.read_inbox(Server(response(inbox_listing([]), [7, 8, 9])), 7, INBOX)
    assert "empty" in message and len(evidence["rops"]) == 4


@pytest.mark.parametrize("answer, reason, failing", [
    (response(header(0x02, 1, EC_NOT_FOUND), [7, rops.HANDLE_NONE, rops.HANDLE_NONE]), "inbox-open-failed",
     "RopOpenFolder"),
    (response(header(0x02, 1) + b"\x00\x00" + header(0x05, 2, EC_NULL_OBJECT), [7, 8, rops.HANDLE_NONE]),
     "inbox-list-failed", "RopGetContentsTable"),
    (response(header(0x02, 1) + b"\x00\x00" + header(0x05, 2) + struct.pack("<L", 1) + header(0x12, 2) + b"\x00"
              + header(0x15, 2) + struct.pack("<BH", 2, 1) + b"\x00" + utf16z("cut"), [7, 8, 9]),
     "rop-response-malformed", None),
    (response(header(0x03, 1), [7, 8, 9]), "rop-response-malformed", None),                 # the wrong RopId
    (response(struct.pack("<BBLBBLH", 0xF9, 0, 2000, 1, 0x02, 2000, 0), [7, 8, 9]), "ec-server-busy", None),
])
def test_wrong_answers_fail_the_mailbox_step_with_their_reason(answer, reason, failing):
    with pytest.raises(StepFailed) as failed:
        mailbox.read_inbox(Server(answer), 7, INBOX)
    assert failed.value.reason == reason
    if failing:
        trace = failed.value.evidence["rops"]
        assert trace[-1]["rop"] == failing and trace[-1]["return_value"] != "0x00000000"


def test_a_failing_call_and_a_failing_logon_are_named_by_their_error():
    def refusing(payload: bytes) -> bytes:
        raise rops.CallFailed("Execute", 0x6BB)

    with pytest.raises(StepFailed) as failed:
        mailbox.read_inbox(refusing, 7, INBOX)
    assert (failed.value.reason, failed.value.evidence["status"]) == ("ec-server-busy", "0x000006bb")
    wrong_server = header(0xFE, 0, 0x478) + b"\x01" + bytes([5]) + b"/o=X\x00"
    with pytest.raises(StepFailed) as failed:
        mailbox.logon(Server(response(wrong_server, [rops.HANDLE_NONE])), "/o=Contoso/cn=alice")
    assert failed.value.reason == "ec-wrong-server" and failed.value.evidence["server_dn"] == "/o=X"


def test_mapi_http_meta_tags_pending_included():
    headers, body = split_meta_tags(b"PROCESSING\r\nPENDING\r\nPENDING\r\nDONE\r\nX-ElapsedTime: 3\r\n"
                                    b"X-StartTime: Sun, 06 Dec 2026 11:00:00 GMT\r\n\r\n\x00\x01\r\n\r\n")
    assert headers["X-ElapsedTime"] == "3" and body == b"\x00\x01\r\n\r\n"
    with pytest.raises(rops.RopMalformed):
        split_meta_tags(b"PROCESSING\r\nSOMETHING\r\n")
