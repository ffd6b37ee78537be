-- Subscriber search without reading every subscriber: a trigram full-text index over
-- the fields the list's search matches (username, name, phone, e-mail, MAC, static
-- IPv4), kept by triggers. A trigram index answers "contains" for three characters
-- or more, case-insensitively; the list still checks each candidate with the same
-- `instr(lower(…))` it always did, so what a search finds does not change, only how
-- many rows it reads to find it. `detail = none` keeps no positions (the index is
-- about 2.5 times smaller): a search asks for rows holding all of the text's trigrams,
-- a superset that the `instr` check narrows to the exact answer.
CREATE VIRTUAL TABLE subscriber_search USING fts5(
    username, name, phone, email, mac, static_ipv4,
    content = 'subscribers', content_rowid = 'id', tokenize = 'trigram', detail = none
);
INSERT INTO subscriber_search (subscriber_search) VALUES ('rebuild');

CREATE TRIGGER subscriber_search_insert AFTER INSERT ON subscribers BEGIN
    INSERT INTO subscriber_search (rowid, username, name, phone, email, mac, static_ipv4)
    VALUES (new.id, new.username, new.name, new.phone, new.email, new.mac, new.static_ipv4);
END;

CREATE TRIGGER subscriber_search_delete AFTER DELETE ON subscribers BEGIN
    INSERT INTO subscriber_search (subscriber_search, rowid, username, name, phone, email, mac, static_ipv4)
    VALUES ('delete', old.id, old.username, old.name, old.phone, old.email, old.mac, old.static_ipv4);
END;

CREATE TRIGGER subscriber_search_update
AFTER UPDATE OF username, name, phone, email, mac, static_ipv4 ON subscribers BEGIN
    INSERT INTO subscriber_search (subscriber_search, rowid, username, name, phone, email, mac, static_ipv4)
    VALUES ('delete', old.id, old.username, old.name, old.phone, old.email, old.mac, old.static_ipv4);
    INSERT INTO subscriber_search (rowid, username, name, phone, email, mac, static_ipv4)
    VALUES (new.id, new.username, new.name, new.phone, new.email, new.mac, new.static_ipv4);
END;
