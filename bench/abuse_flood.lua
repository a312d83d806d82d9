-- wrk script for bench/abuse.sh: a different invalid `Authorization: Bearer` on every request,
-- and a count of the response statuses (printed as one `statuses:` line when wrk is done).
--
--   wrk ... -s bench/abuse_flood.lua URL -- MODE [ARG]
--
-- MODE
--   jwt-garbage        three random base64url segments (36.120.86 characters)
--   forged-sig ARG     ARG = "header.payload" of a well-formed token; a random 86-character
--                      signature that decodes to 64 bytes is appended (the gateway must check
--                      the ES256 signature)
--   unknown-kid ARG    ARG = "payload" segment; the header names a random 16-character kid,
--                      the signature is random
--   opaque             a random 43-character base64url string (an API key's shape)

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local chars = {}
for i = 1, #alphabet do chars[i] = alphabet:sub(i, i) end

local function random_b64(n)
    local out = {}
    for i = 1, n do out[i] = chars[math.random(1, 64)] end
    return table.concat(out)
end

local function b64url(s)
    local out = {}
    for i = 1, #s, 3 do
        local a, b, c = s:byte(i, i + 2)
        local n = a * 65536 + (b or 0) * 256 + (c or 0)
        out[#out + 1] = chars[math.floor(n / 262144) % 64 + 1]
        out[#out + 1] = chars[math.floor(n / 4096) % 64 + 1]
        if b then out[#out + 1] = chars[math.floor(n / 64) % 64 + 1] end
        if c then out[#out + 1] = chars[n % 64 + 1] end
    end
    return table.concat(out)
end

local threads = {}
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("id", counter)
    table.insert(threads, thread)
end

local mode, arg
statuses = {}

function init(args)
    mode = args[1] or "opaque"
    arg = args[2] or ""
    math.randomseed(os.time() * 1000 + (id or 0) * 7919)
    for _ = 1, 10 do math.random() end
end

-- 86 base64url characters carry 64 bytes plus 4 bits, which must be zero for a strict
-- decoder: the last character is one of A, Q, g, w, so the signature decodes to 64 bytes and
-- the gateway really has to check it.
local last = { "A", "Q", "g", "w" }
local function signature()
    return random_b64(85) .. last[math.random(1, 4)]
end

local function token()
    if mode == "jwt-garbage" then
        return random_b64(36) .. "." .. random_b64(120) .. "." .. random_b64(86)
    elseif mode == "forged-sig" then
        return arg .. "." .. signature()
    elseif mode == "unknown-kid" then
        local header = '{"alg":"ES256","typ":"at+jwt","kid":"' .. random_b64(16) .. '"}'
        return b64url(header) .. "." .. arg .. "." .. signature()
    else
        return random_b64(43)
    end
end

function request()
    return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. token() })
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, thread in ipairs(threads) do
        local s = thread:get("statuses")
        for code, n in pairs(s) do total[code] = (total[code] or 0) + n end
    end
    local parts = {}
    for code, n in pairs(total) do parts[#parts + 1] = code .. "=" .. n end
    table.sort(parts)
    io.write("statuses: " .. table.concat(parts, " ") .. "\n")
end
