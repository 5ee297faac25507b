"""The mailbox store (folders, items, ids, delivery), sans-IO; shared by the EWS core and, later, the ROPs."""
