-- POST /v1/sessions with the JSON credentials of seeded users
-- (user<i>@bench.example), cycling through the users.
-- args: users password
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

local users, password, i = 1, "", 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  users, password = tonumber(args[1]), args[2]
end

function request()
  local body = string.format('{"email":"user%d@bench.example","password":"%s"}', i, password)
  i = (i + 1) % users
  return wrk.format("POST", "/v1/sessions", headers, body)
end

done = lib.report
