-- Quota held by an upload while it is written: taken atomically when its PUT starts,
-- given back when it completes (its size counts instead), fails, or is abandoned
-- (reserved_until passes; a server that died mid-upload cannot hold quota for good).
ALTER TABLE uploads ADD COLUMN reserved_bytes INTEGER;
ALTER TABLE uploads ADD COLUMN reserved_until INTEGER;
