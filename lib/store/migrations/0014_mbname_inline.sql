-- Version 14: postern_mbname as one expression, which the planner inlines into the query that
-- calls it. The version 7 body selected from a subquery, so every call ran as a function of
-- its own (parsed and planned again for each statement that used it): a third of
-- PostgreSQL's time in an IMAP SELECT went there. Same answers: the name without trailing
-- '/', and INBOX in any case as INBOX.
CREATE OR REPLACE FUNCTION postern_mbname(p_name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN upper(rtrim(p_name, '/')) = 'INBOX' THEN 'INBOX' ELSE rtrim(p_name, '/') END
$$;
