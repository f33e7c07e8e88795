-- wrk script: code-login starts (/api/authenticate), every request a new random name
-- and a client address in a /24 of its own (the server must trust 127.0.0.1 as a proxy).
-- APP (the app token) comes from the environment; see code-starts.sh.
local counter = 0
local app = os.getenv("APP")
local tid = 0
setup = function(thread) thread:set("tid", tid); tid = tid + 1 end
request = function()
  counter = counter + 1
  local n = counter * 16 + tid
  local path = "/api/authenticate?token=" .. app .. "&name=w" .. n .. "-"
    .. math.random(1, 1000000000) .. "%40example.com"
  local headers = { ["X-Forwarded-For"] = string.format("10.%d.%d.7", math.floor(n / 256) % 256, n % 256) }
  return wrk.format("GET", path, headers)
end
