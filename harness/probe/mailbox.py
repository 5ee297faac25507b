"""The mailbox checks after the transport, the same ROP buffers over RPC over HTTP (EcDoRpcExt2) and MAPI over HTTP
(Execute): RopLogon, then the Inbox (RopOpenFolder, RopGetContentsTable, RopSetColumns, RopQueryRows), then its first
message (RopOpenMessage, RopGetPropertiesSpecific of the subject and body). Each ROP's answer goes into a trace
(the step's ``rops`` evidence) that is the same on both transports for the same mailbox."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from harness.probe.report import StepFailed
from harness.probe.rops import (
    EC_WRONG_SERVER,
    HANDLE_NONE,
    ROP_BACKOFF,
    ROP_LOGON,
    CallFailed,
    RopAnswer,
    RopBuffer,
    RopMalformed,
    parse_response,
)

TAG_SUBJECT, TAG_MESSAGE_CLASS, TAG_MID, TAG_BODY = 0x0037001F, 0x001A001F, 0x674A0014, 0x1000001F
COLUMNS = [TAG_SUBJECT, TAG_MESSAGE_CLASS, TAG_MID]
MESSAGE_TAGS = [TAG_SUBJECT, TAG_BODY]
ROW_LIMIT = 50
BODY_SHOWN = 200                 # characters of the body kept in the evidence
# ReturnValues a store gives ([MS-OXCDATA] 2.4) and the reason ids of the logon they fail
STORE_ERRORS = {0x478: "ec-wrong-server", 0x80040111: "ec-login-failure", 0x80040112: "ec-login-failure",
                0x3EB: "ec-unknown-user", 0x4DF: "ec-client-ver-disallowed", 0x80040FFF: "ec-not-encrypted",
                0x6BB: "ec-server-busy", 0x480: "ec-server-busy"}

# ROP request buffer -> ROP response buffer, over whichever transport
Execute = Callable[[bytes], bytes]


def store_failure(code: int, operation: str, default_reason: str) -> StepFailed:
    reason = STORE_ERRORS.get(code, default_reason)
    return StepFailed(reason, f"{operation} failed with 0x{code:08x} ({reason})", status=f"0x{code:08x}")


def run_rops(execute: Execute, buffer: RopBuffer, reason: str) -> Tuple[List[RopAnswer], List[int]]:
    """``buffer``'s answers and handle table; the call failing is ``reason`` (or the store error it names)."""
    try:
        answers, handles = parse_response(buffer, execute(buffer.payload()))
    except CallFailed as exc:
        raise store_failure(exc.code, exc.operation, reason)
    except RopMalformed as exc:
        raise StepFailed("rop-response-malformed", f"the ROP response could not be read: {exc}")
    backoff = next((a for a in answers if a.rop_id == ROP_BACKOFF), None)
    if backoff is not None:
        raise StepFailed("ec-server-busy", f"RopBackoff: the server asks to wait {backoff.fields['duration_ms']} ms",
                         backoff_ms=backoff.fields["duration_ms"])
    return answers, handles


@dataclass(frozen=True)
class Logon:
    handle: int
    folders: Dict[str, bytes]
    mailbox_guid: str


def logon(execute: Execute, essdn: str) -> Logon:
    """RopLogon into a one-slot handle table; a failure as the reason id of its ReturnValue."""
    answers, handles = run_rops(execute, RopBuffer([HANDLE_NONE]).logon(essdn, 0),
                                 "mailbox-logon-failed")
    if not answers or answers[0].rop_id != ROP_LOGON:
        raise StepFailed("mailbox-logon-failed", "no RopLogon response came back")
    answer = answers[0]
    if answer.code:
        failure = store_failure(answer.code, "RopLogon", "mailbox-logon-failed")
        if answer.code == EC_WRONG_SERVER:
            failure.evidence["server_dn"] = answer.fields.get("server_dn")
        raise failure
    return Logon(handles[0], answer.fields["folders"], answer.fields["mailbox_guid"])  # type: ignore[arg-type]


def _trace(answer: RopAnswer, **shown: object) -> Dict[str, object]:
    return {"rop": answer.name, "return_value": f"0x{answer.code:08x}", **shown}


def _checked(answers: List[RopAnswer], index: int, name: str, reason: str, trace: List[Dict[str, object]]
             ) -> RopAnswer:
    """The answer to the ``index``-th ROP asked, which must have succeeded."""
    if index >= len(answers):
        raise StepFailed("rop-response-malformed", f"no {name} response came back", rops=trace)
    answer = answers[index]
    if answer.code:
        trace.append(_trace(answer))
        raise StepFailed(reason, f"{name} failed with 0x{answer.code:08x}", status=f"0x{answer.code:08x}",
                         rops=trace)
    return answer


def _text(value: object) -> Optional[str]:
    return value if isinstance(value, str) else None


def read_inbox(execute: Execute, logon_handle: int, inbox_fid: bytes) -> Tuple[str, Dict[str, object]]:
    """Open the Inbox, list it, read its first message: (the step's message, its evidence). Fails with
    inbox-open-failed, inbox-list-failed, message-read-failed or rop-response-malformed."""
    trace: List[Dict[str, object]] = []
    buffer = (RopBuffer([logon_handle, HANDLE_NONE, HANDLE_NONE]).open_folder(0, 1, inbox_fid)
              .contents_table(1, 2).set_columns(2, COLUMNS).query_rows(2, COLUMNS, ROW_LIMIT))
    answers, handles = run_rops(execute, buffer, "inbox-list-failed")
    trace.append(_trace(_checked(answers, 0, "RopOpenFolder(Inbox)", "inbox-open-failed", trace)))
    table = _checked(answers, 1, "RopGetContentsTable", "inbox-list-failed", trace)
    trace.append(_trace(table, row_count=table.fields["row_count"]))
    trace.append(_trace(_checked(answers, 2, "RopSetColumns", "inbox-list-failed", trace)))
    query = _checked(answers, 3, "RopQueryRows", "inbox-list-failed", trace)
    rows = [{"subject": _text(row[0]), "message_class": _text(row[1]),
             "mid": row[2] if isinstance(row[2], str) else None} for row in query.fields["rows"]]  # type: ignore
    trace.append(_trace(query, rows=rows))
    evidence: Dict[str, object] = {"inbox_fid": inbox_fid.hex(), "row_count": table.fields["row_count"],
                                   "rops": trace}
    if not rows:
        return "Inbox opened; it is empty, so no message to read", evidence
    first = rows[0]
    if not first["mid"]:
        raise StepFailed("inbox-list-failed", "RopQueryRows gave no PidTagMid for the first row", rops=trace)
    folder_handle = handles[1]
    buffer = (RopBuffer([folder_handle, HANDLE_NONE]).open_message(0, 1, inbox_fid, bytes.fromhex(first["mid"]))
              .get_properties(1, MESSAGE_TAGS))
    answers, _ = run_rops(execute, buffer, "message-read-failed")
    opened = _checked(answers, 0, "RopOpenMessage", "message-read-failed", trace)
    trace.append(_trace(opened, normalized_subject=opened.fields["normalized_subject"],
                        recipient_count=opened.fields["recipient_count"]))
    props = _checked(answers, 1, "RopGetPropertiesSpecific", "message-read-failed", trace)
    values: List[object] = props.fields["values"]  # type: ignore[assignment]
    subject, body = values[0], values[1]
    if not isinstance(subject, str):
        raise StepFailed("message-read-failed", f"the message has no readable subject ({subject!r})", rops=trace)
    body_text = body if isinstance(body, str) else ""
    trace.append(_trace(props, subject=subject, body=body_text[:BODY_SHOWN], body_length=len(body_text)))
    return (f"Inbox opened: {table.fields['row_count']} item(s); read \"{subject}\" ({len(body_text)} characters "
            f"of body)"), evidence
