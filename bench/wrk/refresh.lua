-- Refresh-token rotations: POST /v1/token grant_type=refresh_token.
-- Starts from a pool of refresh tokens (one per family, from password grants)
-- and chains each family: a token is sent once, and the new refresh token in
-- its answer goes back to the pool for a later request. No family ever has two
-- requests in flight, so no rotation is a reuse.
-- args: file
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

local pool, head, tail = {}, 1, 0
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

function init(args)
  for _, token in ipairs(lib.lines(args[1])) do
    tail = tail + 1
    pool[tail] = token
  end
end

function request()
  local token = "pool-empty" -- only if answers failed; counted as errors
  if head <= tail then
    token, pool[head] = pool[head], nil
    head = head + 1
  end
  return wrk.format("POST", "/v1/token", headers, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  local token = body:match('"refresh_token":"([^"]+)"')
  if token then
    tail = tail + 1
    pool[tail] = token
  end
end

done = lib.report
