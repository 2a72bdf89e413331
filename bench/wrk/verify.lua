-- GET <path> with one credential header, cycling through a file of
-- credentials (one a line): session cookies or access tokens.
-- args: path header prefix file [marker]
-- e.g.  /v1/verify Cookie __Host-tessera_session= cookies.txt
--       /v1/verify Authorization "Bearer " access.txt
-- With a marker path, that file is created once every credential was sent.
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

local requests, n, i, marker = {}, 0, 0, nil

function init(args)
  local path, header, prefix = args[1], args[2], args[3]
  for _, value in ipairs(lib.lines(args[4])) do
    n = n + 1
    requests[n] = wrk.format("GET", path, { [header] = prefix .. value })
  end
  marker = args[5]
end

function request()
  if n == 0 then return wrk.format() end -- wrk's own check, before init()
  i = i + 1
  if i > n then
    i = 1
    if marker then lib.touch(marker); marker = nil end
  end
  return requests[i]
end

done = lib.report
