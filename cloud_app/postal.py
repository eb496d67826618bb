"""Deterministic postal codes: the same household gets the same German
postal code on every edge, in every run, in every process.

A SHA-256 of the household id picks one of the sixteen states, weighted by
each state's population (so Nordrhein-Westfalen gets about 26 times as many
households as Bremen), and a second part of the same digest picks one real
postal code of that state. The codes
are delivery postal codes of each state's larger cities, from Deutsche Post's
postal code directory (Postleitzahlenverzeichnis, as listed per city in the
German Wikipedia's city articles). STATE_RANGES are the coarse postal-code
regions (Postleitregionen) each state's codes fall in; the tests check every
code of the table against them, so a typo that strays into another state's
region is caught.
"""

import bisect
import hashlib
import itertools
from functools import lru_cache

STATE_NAMES = {
    "BW": "Baden-Württemberg",
    "BY": "Bayern",
    "BE": "Berlin",
    "BB": "Brandenburg",
    "HB": "Bremen",
    "HH": "Hamburg",
    "HE": "Hessen",
    "MV": "Mecklenburg-Vorpommern",
    "NI": "Niedersachsen",
    "NW": "Nordrhein-Westfalen",
    "RP": "Rheinland-Pfalz",
    "SL": "Saarland",
    "SN": "Sachsen",
    "ST": "Sachsen-Anhalt",
    "SH": "Schleswig-Holstein",
    "TH": "Thüringen",
}
STATES = tuple(STATE_NAMES)

# Inhabitants in thousands, annual mean 2018 (Fortschreibung des Bevölkerungsstandes auf der Basis
# des Zensus 2011), Statistisches Bundesamt and the statistical offices of the Länder, table
# "Einwohner/-innen im Jahresmittel nach Bundesländern", statistikportal.de (UGRdL). Only the
# proportions matter: they decide how many simulated households live in each state.
POPULATION_THOUSANDS = {
    "BW": 11046, "BY": 13037, "BE": 3629, "BB": 2508, "HB": 682, "HH": 1836, "HE": 6255, "MV": 1610,
    "NI": 7973, "NW": 17922, "RP": 4079, "SL": 992, "SN": 4080, "ST": 2216, "SH": 2893, "TH": 2147,
}
_TOTAL = sum(POPULATION_THOUSANDS.values())
_CUMULATIVE = tuple(itertools.accumulate(POPULATION_THOUSANDS[state] for state in STATES))

STATE_RANGES = {
    "BW": ((68000, 69999), (70000, 79999), (88000, 89999)),
    "BY": ((80000, 87999), (90000, 97999)),
    "BE": ((10000, 14199),),
    "BB": ((3000, 3999), (14400, 16999)),
    "HB": ((27568, 27580), (28195, 28779)),
    "HH": ((20000, 21149), (22000, 22769)),
    "HE": ((34000, 36999), (60000, 65999)),
    "MV": ((17000, 19999), (23900, 23999)),
    "NI": ((26000, 27999), (29000, 31999), (37000, 38999), (48400, 49999)),
    "NW": ((40000, 48399), (50000, 53999), (57000, 59999)),
    "RP": ((54000, 56999), (67000, 67999)),
    "SL": ((66000, 66999),),
    "SN": ((1000, 1999), (4000, 4999), (8000, 9999)),
    "ST": ((6000, 6999), (38800, 39999)),
    "SH": ((23500, 25999),),
    "TH": ((7000, 7999), (98000, 99999)),
}

_CODES = {
    # Stuttgart, Karlsruhe, Freiburg, Mannheim, Heidelberg, Ulm
    "BW": "70173 70174 70176 70178 70180 70182 70184 70186 70188 70190 70191 70192 70193 70195 70197 70199 "
          "76131 76133 76135 76137 76139 79098 79100 79102 79104 79106 68159 68161 68163 68165 68167 68169 "
          "69115 69117 69120 69121 89073 89075 89077 89079 89081",
    # München, Nürnberg, Augsburg, Regensburg, Würzburg
    "BY": "80331 80333 80335 80336 80337 80339 80469 80538 80539 80634 80636 80637 80638 80639 80686 80687 "
          "80689 80796 80797 80798 80799 80801 80802 80803 80804 80805 80807 80809 90402 90403 90408 90409 "
          "90411 90419 90425 90427 90429 90431 90439 90441 90443 90449 90451 90453 90455 90459 90461 90469 "
          "86150 86152 86153 86154 86156 86157 86159 86161 86163 86165 86167 86169 93047 93049 93051 93053 "
          "93055 93057 93059 97070 97072 97074 97076 97078 97080 97082 97084",
    "BE": "10115 10117 10119 10178 10179 10243 10245 10247 10249 10315 10317 10318 10319 10365 10367 10369 "
          "10405 10407 10409 10435 10437 10439 10551 10553 10555 10557 10559 10585 10587 10589 10623 10625 "
          "10627 10629 10707 10709 10711 10713 10715 10717 10719 10777 10779 10781 10783 10785 10787 10789 "
          "10823 10825 10827 10829 10961 10963 10965 10967 10969 10997 10999 12043 12045 12047 12049 12051 "
          "12053 12055 12057 12059 13347 13349 13351 13353 13355 13357 13359 14050 14052 14053 14055 14057",
    # Potsdam, Cottbus, Brandenburg an der Havel, Frankfurt (Oder), Eberswalde, Oranienburg
    "BB": "14467 14469 14471 14473 14476 14478 14480 14482 03042 03044 03046 03048 03050 03051 03052 03053 "
          "03054 03055 14770 14772 14774 14776 15230 15232 15234 15236 16225 16227 16515",
    # Bremen, Bremerhaven
    "HB": "28195 28197 28199 28201 28203 28205 28207 28209 28211 28213 28215 28217 28219 28237 28239 28259 "
          "28277 28279 28307 28309 28325 28327 28329 28355 28357 28359 28717 28719 28755 28757 28759 28777 "
          "28779 27568 27570 27572 27574 27576 27578 27580",
    "HH": "20095 20097 20099 20144 20146 20148 20149 20249 20251 20253 20255 20257 20259 20354 20355 20357 "
          "20359 20457 20459 20535 20537 20539 21029 21031 21033 21035 21037 21039 21073 21075 21077 21079 "
          "21107 21109 21129 21149 22041 22043 22045 22047 22049 22081 22083 22085 22087 22089 22111 22115 "
          "22117 22119 22143 22145 22147 22149 22159 22175 22177 22179 22297 22299 22301 22303 22305 22307",
    # Frankfurt am Main, Wiesbaden, Kassel, Darmstadt
    "HE": "60306 60308 60310 60311 60313 60314 60316 60318 60320 60322 60323 60325 60326 60327 60329 60385 "
          "60386 60388 60389 60431 60433 60435 60437 60438 60439 60486 60487 60488 60489 60528 60529 60549 "
          "65183 65185 65187 65189 65191 65193 65195 65197 65199 65201 65203 65205 65207 34117 34119 34121 "
          "34123 34125 34127 34128 34130 34131 34132 34134 64283 64285 64287 64289 64291 64293 64295 64297",
    # Rostock, Schwerin, Greifswald, Neubrandenburg, Stralsund, Wismar
    "MV": "18055 18057 18059 18069 18106 18107 18109 18119 18146 18147 19053 19055 19057 19059 19061 19063 "
          "17489 17491 17493 17033 17034 17036 18435 18437 18439 23966 23968 23970",
    # Hannover, Braunschweig, Oldenburg, Osnabrück, Göttingen
    "NI": "30159 30161 30163 30165 30167 30169 30171 30173 30175 30177 30179 30419 30449 30451 30453 30455 "
          "30457 30459 30519 30521 30539 30559 30625 30627 30629 30655 30657 30659 30669 38100 38102 38104 "
          "38106 38108 38110 38112 38114 38116 38118 38120 38122 38124 38126 26121 26122 26123 26125 26127 "
          "26129 26131 26133 26135 49074 49076 49078 49080 49082 49084 49086 49088 49090 37073 37075 37077 "
          "37079 37081 37083 37085",
    # Köln, Düsseldorf, Dortmund, Essen, Münster, Bonn
    "NW": "50667 50668 50670 50672 50674 50676 50677 50678 50679 50733 50735 50737 50739 50765 50767 50769 "
          "50823 50825 50827 50829 50858 50859 50931 50933 50935 50937 50939 50968 50969 50996 50997 50999 "
          "51061 51063 51065 51067 51069 51103 51105 51107 51109 51143 51145 51147 51149 40210 40211 40212 "
          "40213 40215 40217 40219 40221 40223 40225 40227 40229 40231 40233 40235 40237 40239 44135 44137 "
          "44139 44141 44143 44145 44147 44149 45127 45128 45130 45131 45133 45134 45136 45138 45139 45141 "
          "48143 48145 48147 48149 48151 48153 48155 48157 48159 48161 48163 48165 48167 53111 53113 53115 "
          "53117 53119 53121 53123 53125 53127 53129",
    # Mainz, Koblenz, Trier, Ludwigshafen, Kaiserslautern
    "RP": "55116 55118 55120 55122 55124 55126 55127 55128 55129 55130 55131 56068 56070 56072 56073 56075 "
          "56076 56077 54290 54292 54293 54294 54295 54296 67059 67061 67063 67065 67067 67069 67071 67655 "
          "67657 67659 67661 67663",
    # Saarbrücken, Neunkirchen, Homburg, Saarlouis, Völklingen
    "SL": "66111 66113 66115 66117 66119 66121 66123 66125 66126 66127 66128 66129 66130 66131 66132 66133 "
          "66538 66539 66540 66424 66740 66333",
    # Dresden, Leipzig, Chemnitz
    "SN": "01067 01069 01097 01099 01108 01109 01127 01129 01139 01157 01159 01169 01187 01189 01217 01219 "
          "01237 01239 01257 01259 01277 01279 01307 01309 01324 01326 01328 04103 04105 04107 04109 04129 "
          "04155 04157 04158 04159 04177 04178 04179 04205 04207 04209 04229 04249 04275 04277 04279 04288 "
          "04289 04299 04315 04316 04317 04318 04319 04328 04329 04347 04349 04356 04357 09111 09112 09113 "
          "09114 09116 09117 09119 09120 09122 09123 09125 09126 09127 09128 09130 09131",
    # Magdeburg, Halle (Saale), Dessau-Roßlau
    "ST": "39104 39106 39108 39110 39112 39114 39116 39118 39120 39122 39124 39126 39128 39130 06108 06110 "
          "06112 06114 06116 06118 06120 06122 06124 06126 06128 06130 06132 06842 06844 06846 06847 06849",
    # Kiel, Lübeck, Flensburg, Neumünster
    "SH": "24103 24105 24106 24107 24109 24111 24113 24114 24116 24118 24143 24145 24146 24147 24148 24149 "
          "24159 23552 23554 23556 23558 23560 23562 23564 23566 23568 23569 23570 24937 24939 24941 24943 "
          "24944 24534 24536 24537 24539",
    # Erfurt, Jena, Gera, Weimar
    "TH": "99084 99085 99086 99087 99089 99091 99092 99094 99096 99097 99098 99099 07743 07745 07747 07749 "
          "07545 07546 07548 07549 07551 07552 07554 07557 99423 99425 99427",
}
POSTAL_CODES = {state: tuple(codes.split()) for state, codes in _CODES.items()}
# Every tuple is located, and a burst brings each household once in the same order, which an LRU smaller
# than the households misses every time; a million (a few hundred bytes each) is the owner cache's bound too.
LOCATE_CACHE_MAX = 1 << 20


@lru_cache(maxsize=LOCATE_CACHE_MAX)
def locate(household):
    """(postal code, state code) of a household id, the same everywhere and always."""
    digest = hashlib.sha256(household.encode("utf-8")).digest()
    # A point in [0, total) from 64 uniform bits; its bucket in the cumulative populations is the state.
    point = (int.from_bytes(digest[:8], "big") * _TOTAL) >> 64
    state = STATES[bisect.bisect_right(_CUMULATIVE, point)]
    codes = POSTAL_CODES[state]
    return codes[int.from_bytes(digest[8:16], "big") % len(codes)], state
