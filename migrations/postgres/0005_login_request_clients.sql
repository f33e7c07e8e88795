-- The client address block (IPv4, or IPv6 /64) each login request came from, so codes
-- can be limited per client as well as per name.

ALTER TABLE login_requests ADD COLUMN client_block TEXT;
CREATE INDEX login_requests_by_client ON login_requests (client_block, created_at);
