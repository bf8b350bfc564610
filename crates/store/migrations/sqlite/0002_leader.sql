-- Named leases with one holder at a time: the supervisors' leader election.
CREATE TABLE leader_leases (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  INTEGER NOT NULL
);
