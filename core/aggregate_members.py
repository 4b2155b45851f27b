"""An aggregate's members: the accounts linked to an organisation, API key or prompt, as its
history remembers them (``AccountState.membership``), and the episode of its enforcement reaching
them (``core.linked_accounts``). Part of the fold: pure, policy-free, bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

# How many member accounts an aggregate (organisation, API key, prompt) remembers, newest kept:
# the most its enforcement can reach at once (``core.linked_accounts``; the policy's
# ``escalation.linked_members`` says how many it does, default 256). One forgotten is reached
# with its next score or link. The bound is the fold's, not the policy's, so that a replay folds
# the same state under any policy: 1,024 account ids (a valid one has at most 128 characters)
# keep a snapshot around 140 KB at most, and a member's score costs one set lookup
# (``Membership``), whatever the count: benchmarks/fold.py --members 1024 folds an organisation's
# history about as fast as --members 256 (~0.83M vs ~0.89M events per CPU second). Past the bound
# members come and go, each return rebuilding the tuple and its set: with 2,048 members taking
# turns, ~0.21M, what the fold managed with 256 members kept before the set.
MAX_MEMBERS = 1024


@dataclass(frozen=True)
class Membership:
    """In an aggregate's history: the accounts linked to it (``MemberLinked``, or a member's
    score), first seen first, the newest MAX_MEMBERS kept, and the episode of its enforcement
    reaching them (``LinkedEpisode``) in course, if one is.

    Not slotted: it keeps lazily built sets of its accounts and of the untold ones beside its
    fields (never encoded, never compared), so that a member's score costs a lookup or two;
    the same ``Membership`` passes from state to state until a member joins or moves, so each
    set is built once per change."""

    accounts: tuple[str, ...] = ()
    # the version of the LinkedEpisode that opened the episode in course (0: none is), and the
    # trigger level it opened under; the episode ends when the level falls below that
    episode: int = 0
    episode_trigger: int = 0
    # how many of the oldest accounts the episode in course has not told (past its reach when
    # it opened): each moves to the newest, and is told, when its next score or link arrives
    untold: int = 0

    def __contains__(self, account: object) -> bool:
        index: frozenset[str] | None = self.__dict__.get("_index")
        if index is None:
            index = frozenset(self.accounts)
            object.__setattr__(self, "_index", index)
        return account in index

    def is_untold(self, account: str) -> bool:
        """``account`` is one of the members the episode in course has not told (a set built
        lazily as the accounts' is: asked on every member's score while an episode is open)."""
        if not self.untold:
            return False
        untold: frozenset[str] | None = self.__dict__.get("_untold")
        if untold is None:
            untold = frozenset(self.accounts[:self.untold])
            object.__setattr__(self, "_untold", untold)
        return account in untold

    def with_member(self, member: str) -> Membership:
        """These members with ``member``, newest last: one forgotten comes back as new with its
        next score or link, and one the episode in course has not told moves to the newest."""
        if member in self:
            if not self.is_untold(member):
                return self
            rest = tuple(a for a in self.accounts if a != member)
            return Membership((*rest, member), self.episode, self.episode_trigger,
                              self.untold - 1)
        accounts = (*self.accounts[1 - MAX_MEMBERS:], member)
        dropped = len(self.accounts) + 1 - len(accounts)
        return Membership(accounts, self.episode, self.episode_trigger,
                          max(0, self.untold - dropped))

    def opened(self, episode: int, trigger: int, reach: int) -> Membership:
        """The episode opened at version ``episode`` told the newest ``reach`` members."""
        return Membership(self.accounts, episode, trigger, max(0, len(self.accounts) - reach))

    def closed(self) -> Membership:
        return Membership(self.accounts)

    def added_since(self, before: Membership) -> tuple[str, ...]:
        """The members that joined, or moved to the newest untold, since ``before`` (an earlier
        state's), first seen first: a suffix of ``accounts``."""
        if self is before:
            return ()
        start = len(self.accounts)
        while start > 0 and (self.accounts[start - 1] not in before
                             or before.is_untold(self.accounts[start - 1])):
            start -= 1
        return self.accounts[start:]


NO_MEMBERS = Membership()
