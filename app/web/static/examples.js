/* Example reviews for the "Sentiment and attention" part.
 *
 * Written for this page (not taken from the IMDB data set): a short one, a negated one
 * (the words alone lean positive, the sentence does not), and a long one, longer than
 * the 800 tokens the bundled classifier reads, so the page can show what it skipped.
 */
"use strict";

window.SEQSERVE_EXAMPLES = (() => {
  const short =
    "A warm, funny and beautifully acted little film. The two leads are wonderful " +
    "together and the ending made me smile for days. I loved it!";

  const negated =
    "I wanted to like this movie, but it is not good. The cast is not bad, yet the " +
    "script never gives them anything worth doing, and the jokes are not funny. " +
    "Not once did I care what happened next. I would not recommend it.";

  const paragraphs = [
    "I went into The Lighthouse Keeper's Daughter knowing almost nothing about it, " +
    "which is the best way to see it, so I will try not to give too much away. It " +
    "is a slow film, and it wants you to know that from the first shot: a long, " +
    "grey morning over the water, the sound of gulls, a woman carrying a bucket up " +
    "a hill that seems to go on forever. Some people in my screening were checking " +
    "their phones after ten minutes. I understand why, but I was hooked.",

    "The story is simple. Mara has lived with her father on a small island for most " +
    "of her life. He keeps the light; she keeps him. When a young surveyor arrives " +
    "to decide whether the lighthouse should be automated, the careful routine of " +
    "their days starts to come apart. There is no villain here, and no big twist. " +
    "The drama comes from small things: a door left open, a letter that is not " +
    "answered, a dinner where nobody says what they mean.",

    "What makes it work is the acting. The actress who plays Mara does more with a " +
    "glance than most performers manage with a whole monologue. You can see her " +
    "weighing every word before she says it, and you can see what it costs her " +
    "when she finally says the wrong one. The father is played with a gruff, " +
    "wounded dignity that never turns into a cartoon of the stubborn old man. The " +
    "surveyor is the weakest of the three, but even he has a lovely scene near the " +
    "middle where he tries to repair a broken radio and ends up telling a story " +
    "about his own father instead.",

    "The photography is gorgeous. Every frame looks like a painting, all slate and " +
    "silver and the occasional shock of red from Mara's coat. The director loves " +
    "long takes, and most of the time they pay off: there is a single shot of a " +
    "storm rolling in that lasts nearly three minutes and had the whole room " +
    "holding its breath. The music is sparse, mostly a cello and the wind, and it " +
    "knows when to stay quiet.",

    "It is not a perfect film. The second act drags, and a subplot about a " +
    "fisherman's debt goes nowhere. A few lines of dialogue sound written rather " +
    "than spoken, and one dream sequence feels like it wandered in from a " +
    "different, more pretentious movie. If you need things to happen quickly, you " +
    "will be bored, and I would not blame you for walking out.",

    "But the last half hour is extraordinary. I will not describe it, except to say " +
    "that everything the film has been quietly building comes together in a way " +
    "that feels both surprising and completely inevitable. I heard people crying " +
    "around me, and I was one of them. When the lights came up, nobody moved for a " +
    "while.",

    "I have thought about it every day since. It is the kind of film that grows in " +
    "your memory, where the slow parts start to feel necessary, because they taught " +
    "you how to watch it. The island, the light, the long silences between two " +
    "people who love each other and cannot say so: it all stays with you.",

    "A word about the sound design, because it deserves one. The lighthouse itself " +
    "seems to breathe: the mechanism ticks and groans, the glass hums when the wind " +
    "picks up, and the foghorn arrives at exactly the moments when a character is " +
    "about to say something important and then does not. It is a clever trick and " +
    "the film uses it sparingly enough that it never becomes a gimmick.",

    "I also want to praise the editing, which is patient without being lazy. Scenes " +
    "end a beat later than you expect, and that extra beat is where the feeling " +
    "lives. A lesser film would have cut away from Mara's face after the letter " +
    "scene; this one stays, and lets us watch her decide not to cry.",

    "Is it for everyone? No. My friend thought it was beautiful but empty, a " +
    "postcard with nothing written on the back, and I can see how someone could " +
    "feel that way. The pacing will test anyone who is tired, and the dialogue is " +
    "so spare that you have to fill in a lot yourself. It rewards attention and " +
    "punishes distraction.",

    "Still, I came out of the cinema feeling that I had seen something rare: a film " +
    "that trusts its audience, that is not afraid of silence, and that believes a " +
    "small story about ordinary people can be as gripping as any thriller. The " +
    "performances are superb, the images are unforgettable, and the ending is one " +
    "of the most moving I have seen in years.",

    "Go and see it on a big screen if you can, with a quiet audience, and give it " +
    "the first twenty minutes before you decide. Put your phone away. Let the " +
    "weather and the waiting do their work. I think you will be glad you did.",

    "I went back a second time a week later, which I almost never do, and it was " +
    "even better. Knowing where it was going, I could see how carefully every small " +
    "moment had been placed: a cup set down a little too hard, a coat hung on the " +
    "wrong hook, a line about the tide that means something completely different " +
    "the second time you hear it. Nothing is wasted, even the parts that seemed " +
    "slow on the first visit.",

    "The supporting cast deserves more credit than the posters give them. The " +
    "postmistress, who only has four scenes, is funny and sharp and a little sad, " +
    "and her conversation with Mara about the winter the ferry stopped running is " +
    "one of the best written scenes in the film. The two boys who row out to the " +
    "island every Sunday add a little lightness just when the story needs it.",

    "If I have one real complaint, it is the marketing, which sells this as a " +
    "romance. It is not, or not mainly. It is a film about duty, and about how " +
    "hard it is to leave a place and a person that have shaped you, even when " +
    "staying is slowly making you smaller. Go in expecting a love story and you " +
    "may feel cheated; go in expecting a quiet, serious drama and you will be " +
    "rewarded.",

    "Ten out of ten from me, for the acting, the images, and an ending I will not " +
    "forget. A masterpiece, and easily the best film I have seen this year.",
  ];

  return {
    short: { label: "short", text: short },
    negated: { label: "negated", text: negated },
    long: { label: "long", text: paragraphs.join("\n\n") },
  };
})();
