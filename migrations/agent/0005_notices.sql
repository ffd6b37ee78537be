-- Outpost agent local store: notices. Never edit once landed.
-- The notices of this site's subscribers, as the controller last sent them (whole, with
-- each state that changed anything), so the suspended page shows them while the
-- controller is unreachable. The page shows only those active by the agent's clock.
CREATE TABLE notices (
    id    INTEGER PRIMARY KEY,
    state TEXT NOT NULL
);
