-- Runs an Argo CD custom health check the way Argo CD does: the check is a chunk that reads the
-- global `obj` (the live object) and returns `hs` with `status` and `message`.
--   lua5.4 health_harness.lua <check.lua> <cases.lua>
-- cases.lua returns a list of { name = ..., obj = {...}, status = "...", message = "..." | nil }
-- (message nil: not checked). Prints one line per case; exits 1 when any case fails.
-- Written for Lua 5.1 (Argo CD's gopher-lua) and 5.4 alike.
local check_path, cases_path = arg[1], arg[2]
if check_path == nil or cases_path == nil then
  io.stderr:write("usage: health_harness.lua <check.lua> <cases.lua>\n")
  os.exit(2)
end
local check, err = loadfile(check_path)
if check == nil then
  io.stderr:write("cannot load " .. check_path .. ": " .. tostring(err) .. "\n")
  os.exit(2)
end
local cases = dofile(cases_path)

local failures = 0
for _, case in ipairs(cases) do
  _G.obj = case.obj
  local ok, hs = pcall(check)
  _G.obj = nil
  local problem = nil
  if not ok then
    problem = "the check raised: " .. tostring(hs)
  elseif type(hs) ~= "table" then
    problem = "the check returned " .. type(hs) .. ", not a table"
  elseif hs.status ~= case.status then
    problem = string.format("status %s (%s), want %s", tostring(hs.status), tostring(hs.message), case.status)
  elseif case.message ~= nil and hs.message ~= case.message then
    problem = string.format("message %q, want %q", tostring(hs.message), case.message)
  elseif type(hs.message) ~= "string" or hs.message == "" then
    problem = "no message"
  end
  if problem == nil then
    print("ok   " .. case.name .. ": " .. hs.status .. ": " .. hs.message)
  else
    failures = failures + 1
    print("FAIL " .. case.name .. ": " .. problem)
  end
end
print(string.format("%d cases, %d failed (%s)", #cases, failures, _VERSION))
if failures > 0 then
  os.exit(1)
end
