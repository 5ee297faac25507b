"""Tasks in the store, sans-IO: an IPM.Task with a start and due date, a status and the percent complete, kept
consistent as Outlook keeps them (Completed is 100 %, 100 % is Completed)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

from harness.mailbox.store import Folder, Item, MailboxContent

TASK_CLASS = "IPM.Task"
NOT_STARTED, IN_PROGRESS, COMPLETED = "NotStarted", "InProgress", "Completed"
STATUSES = (NOT_STARTED, IN_PROGRESS, COMPLETED, "WaitingOnOthers", "Deferred")   # TaskStatusType


@dataclass(eq=False)
class TaskItem(Item):
    start_date: Optional[dt.datetime] = None
    due_date: Optional[dt.datetime] = None
    status: str = NOT_STARTED
    percent_complete: float = 0.0
    complete_date: Optional[dt.datetime] = None

    @property
    def is_complete(self) -> bool:
        return self.status == COMPLETED


def settle(task: TaskItem, now: dt.datetime) -> None:
    """Status and PercentComplete agree, as Exchange makes them: Completed sets 100 and the complete date; 100
    sets Completed; a started percentage leaves NotStarted for InProgress."""
    if task.status == COMPLETED or task.percent_complete >= 100:
        task.status, task.percent_complete = COMPLETED, 100.0
        task.complete_date = task.complete_date or now
        return
    task.complete_date = None
    if task.status == NOT_STARTED and task.percent_complete > 0:
        task.status = IN_PROGRESS


def add_task(owner: MailboxContent, *, subject: str, when: dt.datetime, body: str = "",
             start_date: Optional[dt.datetime] = None, due_date: Optional[dt.datetime] = None,
             status: str = NOT_STARTED, percent_complete: float = 0.0, folder: Optional[Folder] = None) -> TaskItem:
    item = owner.add_item(folder or owner.distinguished["tasks"], kind=TaskItem, subject=subject, body=body,
                          sender=owner.address, to=(), received=when, sent=when, message_id="", is_read=True,
                          item_class=TASK_CLASS, start_date=start_date, due_date=due_date, status=status,
                          percent_complete=percent_complete)
    assert isinstance(item, TaskItem)
    settle(item, when)
    return item
