"""The NTLM security contexts of one association (MS-RPCE 3.3.1.5.2), keyed by auth_context_id.

- Auth levels: none, connect (2; no verifiers after AUTH3), call/packet (3/4, signed and checked like integrity,
  as Samba does), integrity (5) and privacy (6), each security context keyed by its auth_context_id (alter_context
  may add one, as impacket's ``alter_ctx`` does). NTLM must have extended session security for levels >= 3.
- AUTH3 gets no reply. A failed AUTH3 makes the context invalid: the next request on it gets fault
  rpc_s_access_denied (0x5) and a close, the access-denied impacket users report for wrong RPC-level credentials
  (not checked against Windows here; Samba sends nca_s_proto_error instead). A malformed AUTH3 trailer gets
  nca_s_fault_remote_no_memory, which Samba's sources say Windows sends. ``rpc_auth`` is recorded when AUTH3
  arrives.
- A request whose verifier does not check out gets fault 0x5 (rpc_s_access_denied, "nca_s_fault_access_denied")
  with PFC_DID_NOT_EXECUTE and the connection closes: the RC4 streams are out of step from then on. A trailer whose
  type/level/context id do not match the context gets nca_s_proto_error and a close.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from harness.org import Org
from harness.protocols.dcerpc.interface import NCA_S_FAULT_REMOTE_NO_MEMORY, RPC_S_ACCESS_DENIED
from harness.protocols.dcerpc.pdus import (
    AUTHN_WINNT,
    COMMON_SIZE,
    LEVEL_CONNECT,
    LEVEL_PRIVACY,
    SEC_TRAILER,
    VERIFIER_SIZE,
    Header,
    PduError,
    ProtocolFault,
    Trailer,
    split_auth,
)
from harness.protocols.logon import ChallengeEdit
from harness.protocols.ntlm import NTLMAcceptor, NTLMError, NTLMResult, NTLMSecurity, ServerIdentity, org_lookup


@dataclass
class SecurityContext:
    """One NTLM security context: its handshake state and the signing/sealing of the PDUs that name it."""
    context_id: int
    level: int
    acceptor: NTLMAcceptor
    state: str = "challenged"             # challenged -> established | failed
    result: Optional[NTLMResult] = None
    security: Optional[NTLMSecurity] = None

    @property
    def verifies(self) -> bool:
        return self.level > LEVEL_CONNECT

    @property
    def _keys(self) -> NTLMSecurity:
        """The session's signing and sealing keys: only an established context that verifies has them, and only
        such a context is asked to protect or unprotect a PDU."""
        if self.security is None:
            raise RuntimeError(f"auth context {self.context_id} ({self.state}) has no session keys")
        return self.security

    def unprotect(self, pdu: bytes, body_start: int, body: bytes, trailer: Trailer, verifier: bytes,
                  context_id: int) -> bytes:
        """The plaintext stub of one request fragment: unsealed, verified and stripped of auth padding."""
        if trailer.pad_length > len(body):
            raise ProtocolFault(f"auth_pad_length {trailer.pad_length} exceeds the stub", context_id=context_id)
        if self.verifies:
            if len(verifier) != VERIFIER_SIZE:
                raise ProtocolFault(f"verifier of {len(verifier)} bytes", RPC_S_ACCESS_DENIED, context_id)
            before, after = pdu[:body_start], pdu[trailer.offset:trailer.offset + SEC_TRAILER.size]
            if self.level == LEVEL_PRIVACY:
                try:
                    body = self._keys.unseal_and_verify(before, body, after, verifier)
                except NTLMError:
                    raise ProtocolFault("request verifier does not match (sealed)", RPC_S_ACCESS_DENIED,
                                        context_id) from None
            elif not self._keys.verify(before + body + after, verifier):
                raise ProtocolFault("request verifier does not match (signed)", RPC_S_ACCESS_DENIED, context_id)
        return body[:len(body) - trailer.pad_length]

    def protect(self, head: bytes, data: bytes, trailer: bytes) -> Tuple[bytes, bytes]:
        """(data, verifier) of one response fragment: sealed and signed at privacy level, else signed."""
        if self.level == LEVEL_PRIVACY:
            return self._keys.seal_and_sign(head, data, trailer)
        return data, self._keys.sign(head + data + trailer)


class SecurityContexts:
    """The association's security contexts: a bind or alter_context starts one, AUTH3 completes it, and each
    request runs under the one its auth trailer names (the bind's own when it has no trailer)."""

    def __init__(self, org: Org, identity: ServerIdentity, rng: random.Random,
                 record: Callable[..., object]) -> None:
        self._org = org
        self._identity = identity
        self._rng = rng
        self._record = record
        self._contexts: Dict[int, SecurityContext] = {}
        self.default: Optional[SecurityContext] = None    # the bind's context (None: the bind had no auth)
        # asked for each new context: the ntlm_challenge fault hook, set by the association
        self.challenge_edit: Callable[[], Optional[ChallengeEdit]] = lambda: None

    def __contains__(self, context_id: int) -> bool:
        return context_id in self._contexts

    def start(self, context_id: int, level: int, token: bytes) -> Tuple[SecurityContext, bytes]:
        """A new context answering NTLM NEGOTIATE ``token``, and the CHALLENGE to send back; raises NTLMError."""
        acceptor = NTLMAcceptor(self._identity, org_lookup(self._org), self._rng, challenge_edit=self.challenge_edit())
        challenge = acceptor.challenge(token)
        context = SecurityContext(context_id, level, acceptor)
        self._contexts[context_id] = context
        return context, challenge

    def on_auth3(self, pdu: bytes, header: Header) -> None:
        """NTLM AUTHENTICATE for a challenged context; a mismatch or a refusal leaves the context failed."""
        try:
            _body, trailer, token = split_auth(pdu, header, COMMON_SIZE)
        except PduError as exc:
            raise ProtocolFault(exc.reason, NCA_S_FAULT_REMOTE_NO_MEMORY) from exc
        if trailer is None:
            raise ProtocolFault("AUTH3 without an auth trailer")
        context = self._contexts.get(trailer.context_id)
        if context is None or context.state != "challenged":
            raise ProtocolFault(f"AUTH3 for auth context {trailer.context_id}, which awaits none")
        if (trailer.auth_type, trailer.level) != (AUTHN_WINNT, context.level):
            context.state = "failed"
            context.result = NTLMResult(ok=False, reason="AUTH3 trailer does not match the bind")
            self._record_auth(context, context.result)
            return
        result = context.acceptor.authenticate(token)
        context.result = result
        if result.ok and context.verifies:
            try:
                context.security = NTLMSecurity(result)
            except NTLMError as exc:
                result = NTLMResult(ok=False, reason=str(exc), user=result.user, domain=result.domain)
                context.result = result
        context.state = "established" if result.ok else "failed"
        self._record_auth(context, result)

    def _record_auth(self, context: SecurityContext, result: NTLMResult) -> None:
        self._record("rpc_auth", auth_context=context.context_id, auth_level=context.level, ok=result.ok,
                     user=result.user, domain=result.domain, reason=result.reason,
                     mailbox=result.mailbox.email if result.mailbox else None)

    def for_request(self, trailer: Optional[Trailer], context_id: int) -> Optional[SecurityContext]:
        """The security context a request runs under; a ProtocolFault when it may not run at all."""
        if trailer is None:
            security = self.default
        else:
            security = self._contexts.get(trailer.context_id)
            if security is None:
                raise ProtocolFault(f"unknown auth context {trailer.context_id}", context_id=context_id)
            if (trailer.auth_type, trailer.level) != (AUTHN_WINNT, security.level):
                raise ProtocolFault(f"auth trailer type {trailer.auth_type} level {trailer.level} does not "
                                    f"match the context's level {security.level}", context_id=context_id)
        if security is None:
            return None
        if security.state == "challenged":
            raise ProtocolFault("request before AUTH3", context_id=context_id)
        if security.state == "failed":
            raise ProtocolFault(f"authentication failed: {security.result.reason if security.result else ''}",
                                RPC_S_ACCESS_DENIED, context_id)
        if security.verifies and trailer is None:
            raise ProtocolFault(f"auth level {security.level} needs a verifier", RPC_S_ACCESS_DENIED, context_id)
        return security
