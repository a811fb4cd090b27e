"""Who is calling, as every service sees it (no HTTP here, so any domain may import it)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sessionary.kit.errors import Forbidden


@dataclass(frozen=True)
class Principal:
    account_id: str
    api_key_id: str | None
    # A ChatKit client secret speaks for one session (turns and reads on it), and for the other
    # threads of its ChatKit `user` within the account (`scope_user`; see chatkit/service.py).
    session_scope: str | None = None
    # Set when the caller is (or acts for) one external user of the account: its own key, an
    # auth token, or the account key naming the user in the body of an external-user route.
    external_user_id: str | None = None
    # Set when the caller presented an auth token: tokens it mints descend from it.
    token_id: str | None = None
    scope_user: str | None = None

    def acting_for(self, external_user_id: str) -> Principal:
        return replace(self, external_user_id=external_user_id)

    def within(self, session_id: str) -> Principal:
        """This client secret's principal, moved onto another session it may reach."""
        return replace(self, session_scope=session_id)

    def check_reach(
        self, account_id: str, external_user_id: str | None, what: str, param: str | None = None
    ) -> None:
        """403 unless the caller may use an object owned by (account, external user).

        An account reaches every object of its own external users (it manages them); an external
        user reaches only its own objects.
        """
        if account_id != self.account_id:
            raise Forbidden(
                f"This {what} belongs to another account.", param=param, code=f"{what}_forbidden"
            )
        if self.external_user_id is not None and external_user_id != self.external_user_id:
            owner = "another external user" if external_user_id else "the account"
            raise Forbidden(
                f"This {what} belongs to {owner}.", param=param, code=f"{what}_forbidden"
            )
